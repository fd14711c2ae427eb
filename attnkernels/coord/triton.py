"""Coordinate Attention's passes over x in Triton: kernels, launchers, op registration.

The same four passes as the compiled ops (semantics in csrc/schemas/coord_schema.cpp), registered
as ``attnkernels::coord_*_triton`` with the same schemas; attnkernels/ops/coord.py
runs the gate network between them. Each strip is reduced by its own kernel in
a fixed order (deterministic), so the pool and the backward reduction read
their inputs twice here (the CPU kernels read them once).
"""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from . import op as coord_ops
from .._core.ops import register_composite
from .._core.triton import acc_dtype, channels_last, element_block, strides_chw


@triton.jit
def _strip_kernel(x_ptr, dy_ptr, a_ptr, out_ptr, C, L, M, stride_c, stride_l, stride_m,
                  GRAD: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                  BLOCK_M: tl.constexpr):
    """out[b, c, l] = mean_m x[b, c, l, m] (GRAD: sum_m dy * x * a[b, c, m]),
    where (l, m) is (h, w) for the h strip and (w, h) for the w strip."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    l = tl.program_id(2).to(tl.int64)
    cmask = c < C
    base = b * C * L * M + l * stride_l
    acc = tl.zeros([BLOCK_C, BLOCK_M], ACC)
    for m0 in range(0, M, BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M)
        mask = cmask[:, None] & (m < M)[None, :]
        offs = base + c[:, None].to(tl.int64) * stride_c + m[None, :].to(tl.int64) * stride_m
        v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
        if GRAD:
            a = tl.load(a_ptr + (b * C + c[:, None]) * M + m[None, :], mask=mask, other=0.0)
            v = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC) * v * a
        acc += v
    total = tl.sum(acc, axis=1)
    if not GRAD:
        total = total / M  # not * (1 / M): a float argument is an fp32 scalar on a GPU
    tl.store(out_ptr + (b * C + c) * L + l, total, mask=cmask)


@triton.jit
def _elementwise_kernel(in_ptr, ah_ptr, aw_ptr, gh_ptr, gw_ptr, out_ptr, N, C, H, W,
                        CHANNELS_LAST: tl.constexpr, GRAD: tl.constexpr, SKIP: tl.constexpr,
                        BLOCK: tl.constexpr):
    """Forward: out = x * aw * ah (+ x). Backward (GRAD): out = dy * aw * ah + gh + gw (+ dy)."""
    i, mask, n, c, h, w = element_block(N, C, H, W, CHANNELS_LAST, BLOCK)
    nc = n * C + c
    a_h = tl.load(ah_ptr + nc * H + h, mask=mask, other=0.0)
    a_w = tl.load(aw_ptr + nc * W + w, mask=mask, other=0.0)
    v = tl.load(in_ptr + i, mask=mask, other=0.0).to(a_h.dtype)
    r = v * a_w * a_h
    if GRAD:
        r += tl.load(gh_ptr + nc * H + h, mask=mask, other=0.0)
        r += tl.load(gw_ptr + nc * W + w, mask=mask, other=0.0)
    if SKIP:
        r += v
    tl.store(out_ptr + i, r.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------- launchers

_BLOCK = 1024


def _strips(x, dy, a_h, a_w, out_h, out_w, grad):
    """Both strips: over W per (n, c, h) into out_h, over H per (n, c, w) into out_w."""
    B, C, H, W = x.shape
    _, tl_acc = acc_dtype(x)
    sc, sh, sw = strides_chw(x)
    block_c, block_m = (32, 32)
    for L, M, sl, sm, a, out in ((H, W, sh, sw, a_w, out_h), (W, H, sw, sh, a_h, out_w)):
        _strip_kernel[(B, triton.cdiv(C, block_c), L)](
            x, dy, a, out, C, L, M, sc, sl, sm, GRAD=grad, ACC=tl_acc,
            BLOCK_C=block_c, BLOCK_M=block_m)


def _elementwise(src, ah, aw, gh, gw, out, grad, skip):
    N = src.numel()
    _elementwise_kernel[(triton.cdiv(N, _BLOCK),)](
        src, ah, aw, gh, gw, out, N, *src.shape[1:], CHANNELS_LAST=channels_last(src), GRAD=grad,
        SKIP=skip, BLOCK=_BLOCK)


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::coord_pool_triton", mutates_args=())
def coord_pool_triton(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    mh, mw = coord_ops.pool_fake(x)
    if x.numel() == 0:
        return mh.fill_(float("nan")), mw.fill_(float("nan"))
    _strips(x, x, mh, mw, mh, mw, False)
    return mh, mw


@torch.library.custom_op("attnkernels::coord_apply_triton", mutates_args=())
def coord_apply_triton(x: torch.Tensor, ah: torch.Tensor, aw: torch.Tensor,
                       skip: bool) -> torch.Tensor:
    y = torch.empty_like(x)
    if x.numel():
        _elementwise(x, ah, aw, ah, aw, y, False, skip)
    return y


@torch.library.custom_op("attnkernels::coord_backward_reduce_triton", mutates_args=())
def coord_backward_reduce_triton(dy: torch.Tensor, x: torch.Tensor, ah: torch.Tensor,
                                 aw: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    dah, daw = torch.zeros_like(ah), torch.zeros_like(aw)
    if x.numel():
        _strips(x, dy, ah, aw, dah, daw, True)
    return dah, daw


@torch.library.custom_op("attnkernels::coord_backward_apply_triton", mutates_args=())
def coord_backward_apply_triton(dy: torch.Tensor, ah: torch.Tensor, aw: torch.Tensor,
                                gh: torch.Tensor, gw: torch.Tensor, skip: bool) -> torch.Tensor:
    dx = torch.empty_like(dy)
    if dy.numel():
        _elementwise(dy, ah, aw, gh, gw, dx, True, skip)
    return dx



# ---------------------------------------------------------------- the composite op
# on the Triton passes (the native backends' twin: csrc/composite/coord.cpp)

@torch.library.custom_op("attnkernels::coord_forward_triton", mutates_args=())
def coord_forward_triton(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                         wh: torch.Tensor, bh: Optional[torch.Tensor], ww: torch.Tensor,
                         bw: Optional[torch.Tensor], bn_w: Optional[torch.Tensor],
                         bn_b: Optional[torch.Tensor], bn_mean: Optional[torch.Tensor],
                         bn_var: Optional[torch.Tensor], config: List[int], eps: float
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                    torch.Tensor]:
    """(y, batch mean, unbiased batch variance, *saved). The statistics are
    those of conv1's output over both strips (empty unless config's BatchNorm
    uses batch statistics). saved, what the backward needs: mh, mw (the strip
    means), z, zn, save_mean, save_invstd (see ``coord_ops.coord_gates``)."""
    if len(config) != 5:
        raise RuntimeError("coord_forward: config must be [act, gate, bn, skip, save]")
    pool, apply = coord_ops.passes("triton")[:2]
    with torch.autocast(x.device.type, enabled=False):
        mh, mw = pool(x)
        ah, aw, z, zn, save_mean, save_invstd, mean, var = coord_ops.coord_gates(
            mh, mw, w1, b1, wh, bh, ww, bw, bn_w, bn_b, bn_mean, bn_var, config, eps)
        if config[coord_ops.Config.BN] == coord_ops.BN_NONE:  # z is zn: the backward needs one
            z = x.new_empty((0,), dtype=coord_ops.stats_dtype(x))
        if not config[coord_ops.Config.SAVE]:  # no backward: free the strips before y exists
            mh, mw, z, zn = (x.new_empty((0,), dtype=coord_ops.stats_dtype(x)) for _ in range(4))
        y = apply(x, ah.contiguous(), aw.contiguous(), bool(config[coord_ops.Config.SKIP]))
        return y, mean, var, mh, mw, z, zn, save_mean, save_invstd


register_composite("coord", coord_ops.PASS_FAKES, coord_ops.forward_fake, coord_ops.backward,
                   coord_ops.SAVED_OUTPUTS, coord_ops.Config.SAVE, backend="triton")
