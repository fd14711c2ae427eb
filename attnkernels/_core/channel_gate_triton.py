"""Channel-gate passes in Triton, shared by every family whose output is
y = x * g[b, c] with g computed per sample from per-(b, c) statistics of x
(Squeeze-and-Excitation, ECA): the reduction over H*W (forward: mean and max;
backward: sum(dy * x) and the argmax counts) and the elementwise apply."""
import torch
import triton
import triton.language as tl

from .triton import acc_dtype, channels_last, layout


@triton.jit
def channel_reduce_kernel(x_ptr, y_ptr, xmax_ptr, sum_ptr, aux_ptr, C, HW, stride_c, stride_p,
                      GRAD: tl.constexpr, HAS_MAX: tl.constexpr, ACC: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Per (n, c) over H*W. Forward (GRAD=0): mean -> sum_ptr (0.5*mean + 0.5*max
    with HAS_MAX, the max -> aux_ptr). Backward (GRAD=1): sum(dy * x) -> sum_ptr,
    with HAS_MAX the count of x == xmax -> aux_ptr. y_ptr is dy when GRAD."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = b * C * HW
    if HAS_MAX and GRAD:
        xm = tl.load(xmax_ptr + b * C + c, mask=cmask, other=0.0)
    acc = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    aux = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    if HAS_MAX and not GRAD:
        aux = tl.full([BLOCK_C, BLOCK_P], float("-inf"), ACC)
    nans = tl.zeros([BLOCK_C, BLOCK_P], tl.int32)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        m = cmask[:, None] & (p < HW)[None, :]
        offs = base + c[:, None].to(tl.int64) * stride_c + p[None, :].to(tl.int64) * stride_p
        v = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        if GRAD:
            acc += tl.load(y_ptr + offs, mask=m, other=0.0).to(ACC) * v
            if HAS_MAX:
                aux += tl.where(m & (v == xm[:, None]), 1.0, 0.0).to(ACC)
        else:
            acc += v
            if HAS_MAX:
                aux = tl.maximum(aux, tl.where(m, v, float("-inf")))
                nans += (v != v).to(tl.int32)
    total = tl.sum(acc, axis=1)
    if GRAD:
        tl.store(sum_ptr + b * C + c, total, mask=cmask)
        if HAS_MAX:
            tl.store(aux_ptr + b * C + c, tl.sum(aux, axis=1), mask=cmask)
    else:
        mean = total / HW  # not * (1 / HW): a float argument is an fp32 scalar on a GPU
        if HAS_MAX:
            # max that propagates NaN like torch.amax
            mx = tl.where(tl.sum(nans, axis=1) > 0, float("nan"), tl.max(aux, axis=1))
            tl.store(aux_ptr + b * C + c, mx, mask=cmask)
            mean = 0.5 * mean + 0.5 * mx
        tl.store(sum_ptr + b * C + c, mean, mask=cmask)


@triton.jit
def channel_apply_kernel(x_ptr, dy_ptr, g_ptr, dmean_ptr, xmax_ptr, dmax_ptr, out_ptr, N, C, HW,
                     CHANNELS_LAST: tl.constexpr, GRAD: tl.constexpr, HAS_MAX: tl.constexpr,
                     BLOCK: tl.constexpr):
    """Forward: out = x * g[n, c]. Backward (GRAD): out = dy * g + dmean
    + (x == xmax) * dmax, all per (n, c)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < N
    if CHANNELS_LAST:
        c = i % C
    else:
        c = (i // HW) % C
    nc = (i // (C * HW)) * C + c
    g = tl.load(g_ptr + nc, mask=m, other=0.0)
    if GRAD:
        out = tl.load(dy_ptr + i, mask=m, other=0.0).to(g.dtype) * g
        out += tl.load(dmean_ptr + nc, mask=m, other=0.0)
        if HAS_MAX:
            x = tl.load(x_ptr + i, mask=m, other=0.0).to(g.dtype)
            xm = tl.load(xmax_ptr + nc, mask=m, other=0.0)
            out += tl.where(x == xm, tl.load(dmax_ptr + nc, mask=m, other=0.0), 0.0)
    else:
        out = tl.load(x_ptr + i, mask=m, other=0.0).to(g.dtype) * g
    tl.store(out_ptr + i, out.to(out_ptr.dtype.element_ty), mask=m)


# ---------------------------------------------------------------- launchers

_APPLY_BLOCK = 1024


def _reduce_blocks(x: torch.Tensor):
    stride_c, _ = layout(x)
    # Tile the contiguous axis: positions for NCHW, channels for channels_last.
    return (64, 16) if stride_c == 1 else (4, 128)


def pool(x: torch.Tensor, pooled: torch.Tensor, xmax: torch.Tensor, has_max: bool) -> None:
    """pooled[b, c] = mean over H*W (0.5 * mean + 0.5 * max with has_max; the max into xmax)."""
    B, C, H, W = x.shape
    _, tl_acc = acc_dtype(x)
    stride_c, stride_p = layout(x)
    block_c, block_p = _reduce_blocks(x)
    channel_reduce_kernel[(B, triton.cdiv(C, block_c))](
        x, x, pooled, pooled, xmax if has_max else pooled, C, H * W, stride_c, stride_p,
        GRAD=False, HAS_MAX=has_max, ACC=tl_acc, BLOCK_C=block_c, BLOCK_P=block_p)


def reduce_grad(dy: torch.Tensor, x: torch.Tensor, xmax: torch.Tensor, dg: torch.Tensor,
                count: torch.Tensor, has_max: bool) -> None:
    """dg[b, c] = sum over H*W of dy * x; with has_max, count[b, c] = #(x == xmax)."""
    B, C, H, W = x.shape
    _, tl_acc = acc_dtype(x)
    stride_c, stride_p = layout(x)
    block_c, block_p = _reduce_blocks(x)
    channel_reduce_kernel[(B, triton.cdiv(C, block_c))](
        x, dy, xmax if has_max else dg, dg, count if has_max else dg, C, H * W, stride_c,
        stride_p, GRAD=True, HAS_MAX=has_max, ACC=tl_acc, BLOCK_C=block_c,
        BLOCK_P=block_p)


def apply(x: torch.Tensor, g: torch.Tensor, y: torch.Tensor) -> None:
    """y = x * g[b, c]."""
    N, C = x.numel(), x.shape[1]
    channel_apply_kernel[(triton.cdiv(N, _APPLY_BLOCK),)](
        x, x, g, g, g, g, y, N, C, x.shape[2] * x.shape[3], CHANNELS_LAST=channels_last(x),
        GRAD=False, HAS_MAX=False, BLOCK=_APPLY_BLOCK)


def apply_grad(dy: torch.Tensor, x: torch.Tensor, g: torch.Tensor, dmean: torch.Tensor,
               xmax: torch.Tensor, dmax: torch.Tensor, dx: torch.Tensor, has_max: bool) -> None:
    """dx = dy * g + dmean (+ dmax where x == xmax, with has_max), all per (b, c)."""
    N, C = x.numel(), x.shape[1]
    channel_apply_kernel[(triton.cdiv(N, _APPLY_BLOCK),)](
        x, dy, g, dmean, xmax if has_max else g, dmax if has_max else g, dx, N, C,
        x.shape[2] * x.shape[3], CHANNELS_LAST=channels_last(x), GRAD=True, HAS_MAX=has_max,
        BLOCK=_APPLY_BLOCK)
