"""Triplet Attention's passes over x in Triton: kernels, launchers, op registration.

The same four passes as the compiled ops (semantics in csrc/schemas/triplet_schema.cpp), registered
as ``attnkernels::triplet_*_triton`` with the same schemas;
attnkernels/ops/triplet.py runs the gate networks between them. Each of the
three maps (over C, over H, over W) is reduced by its own launch of one kernel,
in a fixed order (deterministic), so the pool and the backward reduction read
their inputs three times here (the CPU kernels read them once).
"""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from . import op as triplet_ops
from .._core.ops import register_composite
from .._core.triton import acc_dtype, channels_last, element_block, strides_chw

_BIG = 2 ** 30  # "no index yet" while taking the first maximal element


@triton.jit
def _reduce_kernel(x_ptr, dy_ptr, max_ptr, out_ptr, aux_ptr, J, Q, K, sample, stride_i, stride_j,
                   stride_k, GRAD: tl.constexpr, ACC: tl.constexpr, BLOCK_K: tl.constexpr,
                   BLOCK_Q: tl.constexpr):
    """Per map entry q = (i, j) of sample b, over k (x[b] at i * stride_i + j *
    stride_j + k * stride_k; the map is (N, Q = I * J)).
    Pool:      out = mean x, aux = max x (NaN if any x is NaN).
    GRAD:      out = sum dy * x, aux = the first k where x is the max (max_ptr),
               or the first NaN where the max is NaN; -1: none."""
    b = tl.program_id(0).to(tl.int64)
    q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    qmask = q < Q
    i = (q // J).to(tl.int64)
    j = (q % J).to(tl.int64)
    base = b * sample + i * stride_i + j * stride_j
    acc = tl.zeros([BLOCK_K, BLOCK_Q], ACC)
    if GRAD:
        mq = tl.load(max_ptr + b * Q + q, mask=qmask, other=0.0)
        tie = tl.full([BLOCK_K, BLOCK_Q], 2 ** 30, tl.int32)
    else:
        mx = tl.full([BLOCK_K, BLOCK_Q], float("-inf"), ACC)
        nans = tl.zeros([BLOCK_K, BLOCK_Q], tl.int32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        m = (k < K)[:, None] & qmask[None, :]
        offs = base[None, :] + k[:, None].to(tl.int64) * stride_k
        v = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        if GRAD:
            acc += tl.load(dy_ptr + offs, mask=m, other=0.0).to(ACC) * v
            hit = (v == mq[None, :]) | ((v != v) & (mq != mq)[None, :])
            tie = tl.minimum(tie, tl.where(m & hit, k[:, None], 2 ** 30))
        else:
            acc += v
            mx = tl.maximum(mx, tl.where(m, v, float("-inf")))
            nans += (v != v).to(tl.int32)
    total = tl.sum(acc, axis=0)
    if GRAD:
        tl.store(out_ptr + b * Q + q, total, mask=qmask)
        t = tl.min(tie, axis=0)
        tl.store(aux_ptr + b * Q + q, tl.where(t == 2 ** 30, -1, t), mask=qmask)
    else:
        tl.store(out_ptr + b * Q + q, total / K, mask=qmask)
        res = tl.where(tl.sum(nans, axis=0) > 0, float("nan"), tl.max(mx, axis=0))
        tl.store(aux_ptr + b * Q + q, res, mask=qmask)


@triton.jit
def _elementwise_kernel(in_ptr, shw_ptr, scw_ptr, shc_ptr, ct_ptr, cgm_ptr, cgx_ptr, ht_ptr,
                        hgm_ptr, hgx_ptr, wt_ptr, wgm_ptr, wgx_ptr, out_ptr, N, C, H, W,
                        SPATIAL: tl.constexpr, CHANNELS_LAST: tl.constexpr, GRAD: tl.constexpr,
                        BLOCK: tl.constexpr):
    """Forward: out = (x s_hw + x s_cw + x s_hc) / 3, or (x s_cw + x s_hc) / 2
    without SPATIAL, product by product as upstream (csrc/common/triplet.h
    branch_mean). Backward (GRAD, in = dy): plus, per map, gmean + gmax where
    this element is the tie."""
    e, mask, b, c, h, w = element_block(N, C, H, W, CHANNELS_LAST, BLOCK)
    pix = (b * H + h) * W + w
    cw = (b * C + c) * W + w
    ch = (b * C + c) * H + h
    s_hw = tl.load(shw_ptr + pix, mask=mask, other=0.0)
    s_cw = tl.load(scw_ptr + cw, mask=mask, other=0.0)
    s_hc = tl.load(shc_ptr + ch, mask=mask, other=0.0)
    v = tl.load(in_ptr + e, mask=mask, other=0.0).to(s_hw.dtype)
    if SPATIAL:
        r = ((v * s_hw + v * s_cw) + v * s_hc) / 3.0  # 1 / 3 would be an fp32 constant
    else:
        r = (v * s_cw + v * s_hc) * 0.5
    if GRAD:
        r += (tl.load(cgm_ptr + pix, mask=mask, other=0.0) + tl.load(hgm_ptr + cw, mask=mask, other=0.0)) \
            + tl.load(wgm_ptr + ch, mask=mask, other=0.0)
        routed_c = tl.load(ct_ptr + pix, mask=mask, other=-1) == c
        routed_h = tl.load(ht_ptr + cw, mask=mask, other=-1) == h
        routed_w = tl.load(wt_ptr + ch, mask=mask, other=-1) == w
        r += (tl.where(routed_c, tl.load(cgx_ptr + pix, mask=mask, other=0.0), 0.0)
              + tl.where(routed_h, tl.load(hgx_ptr + cw, mask=mask, other=0.0), 0.0)) \
            + tl.where(routed_w, tl.load(wgx_ptr + ch, mask=mask, other=0.0), 0.0)
    tl.store(out_ptr + e, r.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------- launchers

_BLOCK = 1024
# The backward's elementwise pass reads twelve maps per element: at 1024 elements
# per program it took 255 registers and spilled on sm_90 (tools/triton_aot.py);
# at 256, 64 registers and no spill.
_BLOCK_GRAD = 256


def _reduce_all(x, dy, maxes, outs, auxes, grad):
    """The three maps, over C, over H and over W, into outs / auxes."""
    B, C, H, W = x.shape
    _, tl_acc = acc_dtype(x)
    sc, sh, sw = strides_chw(x)
    # (I, J, K, stride_i, stride_j, stride_k) per map
    geometry = ((H, W, C, sh, sw, sc), (C, W, H, sc, sw, sh), (C, H, W, sc, sh, sw))
    block_k, block_q = 16, 64
    for (I, J, K, si, sj, sk), mx, out, aux in zip(geometry, maxes, outs, auxes):
        _reduce_kernel[(B, triton.cdiv(I * J, block_q))](
            x, dy, mx, out, aux, J, I * J, K, C * H * W, si, sj, sk, GRAD=grad, ACC=tl_acc,
            BLOCK_K=block_k, BLOCK_Q=block_q)


def _elementwise(src, s_hw, s_cw, s_hc, spatial, grads, out, grad):
    N = src.numel()
    block = _BLOCK_GRAD if grad else _BLOCK
    _elementwise_kernel[(triton.cdiv(N, block),)](
        src, s_hw, s_cw, s_hc, *grads, out, N, *src.shape[1:], SPATIAL=spatial,
        CHANNELS_LAST=channels_last(src), GRAD=grad, BLOCK=block)


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::triplet_pool_triton", mutates_args=())
def triplet_pool_triton(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                  torch.Tensor, torch.Tensor, torch.Tensor]:
    out = triplet_ops.pool_fake(x)
    if x.numel() == 0:
        return tuple(t.fill_(float("nan")) for t in out)
    _reduce_all(x, x, out[1::2], out[0::2], out[1::2], False)
    return out


@torch.library.custom_op("attnkernels::triplet_apply_triton", mutates_args=())
def triplet_apply_triton(x: torch.Tensor, s_hw: torch.Tensor, s_cw: torch.Tensor,
                         s_hc: torch.Tensor, spatial: bool) -> torch.Tensor:
    y = torch.empty_like(x)
    if x.numel():
        _elementwise(x, s_hw, s_cw, s_hc, spatial, [s_hw] * 9, y, False)
    return y


@torch.library.custom_op("attnkernels::triplet_backward_reduce_triton", mutates_args=())
def triplet_backward_reduce_triton(
        dy: torch.Tensor, x: torch.Tensor, cmax: torch.Tensor, hmax: torch.Tensor,
        wmax: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                     torch.Tensor, torch.Tensor]:
    sums = tuple(t.zero_() for t in triplet_ops._maps(x))
    ties = tuple(t.fill_(-1) for t in triplet_ops._maps(x, torch.int32))
    if x.numel():
        _reduce_all(x, dy, (cmax, hmax, wmax), sums, ties, True)
    return (*sums, *ties)


@torch.library.custom_op("attnkernels::triplet_backward_apply_triton", mutates_args=())
def triplet_backward_apply_triton(
        dy: torch.Tensor, s_hw: torch.Tensor, s_cw: torch.Tensor, s_hc: torch.Tensor,
        spatial: bool, ctie: torch.Tensor, cgmean: torch.Tensor, cgmax: torch.Tensor,
        htie: torch.Tensor, hgmean: torch.Tensor, hgmax: torch.Tensor, wtie: torch.Tensor,
        wgmean: torch.Tensor, wgmax: torch.Tensor) -> torch.Tensor:
    dx = torch.empty_like(dy)
    if dy.numel():
        _elementwise(dy, s_hw, s_cw, s_hc, spatial,
                     [ctie, cgmean, cgmax, htie, hgmean, hgmax, wtie, wgmean, wgmax], dx, True)
    return dx



# ---------------------------------------------------------------- the composite op
# on the Triton passes (the native backends' twin: csrc/composite/triplet.cpp)

@torch.library.custom_op("attnkernels::triplet_forward_triton", mutates_args=())
def triplet_forward_triton(x: torch.Tensor, conv_w: torch.Tensor, conv_b: Optional[torch.Tensor],
                           bn_w: Optional[torch.Tensor], bn_b: Optional[torch.Tensor],
                           bn_mean: Optional[torch.Tensor], bn_var: Optional[torch.Tensor],
                           config: List[int], eps: float
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor]:
    """(y, cmean, cmax, hmean, hmax, wmean, wmax, q_cw, q_hc, q_hw, s_hw, s_cw, s_hc,
    save_mean, save_invstd, bn_mean, bn_var_unbiased). The pooled maps, the
    branches' conv outputs q (N, 1, rows, cols) in their planes (q_hw empty
    without the spatial branch), the gates and BatchNorm's saved statistics per
    branch are what the backward reads, so it recomputes none of the gate
    networks. The last two are the per-branch batch statistics of the conv
    outputs (empty unless config's BatchNorm uses batch statistics)."""
    if len(config) != 3:
        raise RuntimeError("triplet_forward: config must be [bn, spatial, save]")
    pool, apply = triplet_ops.passes("triton")[:2]
    with torch.autocast(x.device.type, enabled=False):
        maps = pool(x)
        like = maps[0]
        inputs = triplet_ops.branch_inputs(maps, config)
        if not config[triplet_ops.Config.SAVE]:
            maps = tuple(like.new_empty((0,)) for _ in maps)
        qs = triplet_ops.branch_convs(inputs, conv_w, conv_b)
        del inputs
        branches = triplet_ops.branch_gates(qs, bn_w, bn_b, bn_mean, bn_var, config, eps)
        (s_hw, s_cw, s_hc), (mean, var) = triplet_ops.gates_of(branches, like, config)
        save = config[triplet_ops.Config.SAVE]
        q_out = [q.contiguous() if save else like.new_empty((0,)) for q in qs]
        q_out += [like.new_empty((0,))] * (3 - len(qs))
        save_mean, save_invstd = (torch.cat([b[i] for b in branches]) for i in (1, 2))
        del qs, branches
        y = apply(x, s_hw, s_cw, s_hc, bool(config[triplet_ops.Config.SPATIAL]))
        return (y, *maps, *q_out, s_hw, s_cw, s_hc, save_mean, save_invstd, mean, var)


register_composite("triplet", triplet_ops.PASS_FAKES, triplet_ops.forward_fake, triplet_ops.backward,
                   triplet_ops.SAVED_OUTPUTS, triplet_ops.Config.SAVE, backend="triton")
