"""CBAM's passes over x in Triton: kernels, launchers, op registration.

The same six passes as the compiled ops (semantics in csrc/schemas/cbam_schema.cpp), registered
as ``attnkernels::cbam_*_triton`` with the same schemas; attnkernels/ops/cbam.py
runs the gate networks between them. Reductions over H*W per (n, c) and over C
per (n, h, w) are separate kernels, each in a fixed order (deterministic);
the backward reduction therefore reads (dy, x) twice here (the CPU kernel
reads them once).
"""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from . import op as cbam_ops
from .._core.ops import register_composite
from .._core.triton import acc_dtype, channels_last, layout

_BIG = 2 ** 30  # "no index" while taking the first maximal element


@triton.jit
def _tie(tie, hit, index, FIRST: tl.constexpr):
    """Running tie state: the smallest index hit (FIRST), or the count of hits."""
    if FIRST:
        return tl.minimum(tie, tl.where(hit, index, 2 ** 30))
    return tie + hit.to(tl.int32)


@triton.jit
def _tie_result(tie, axis, FIRST: tl.constexpr):
    if FIRST:
        t = tl.min(tie, axis=axis)
        return tl.where(t == 2 ** 30, -1, t)
    return tl.sum(tie, axis=axis)


@triton.jit
def _over_hw_kernel(x_ptr, dy_ptr, pix_a_ptr, pix_b_ptr, pix_c_ptr, chan_ptr, out_ptr, aux_ptr,
                    C, HW, stride_c, stride_p, MODE: tl.constexpr, FIRST: tl.constexpr,
                    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Per (n, c), over H*W.
    MODE 0 (channel pool):            out = mean x, aux = max x
    MODE 1 (backward, channel side):  out = sum dy * x * sa (pix_a), aux = tie of x == cmax (chan)
    MODE 2 (spatial pool backward):   out = sum x * (sgmean (pix_a) + routed * sgmax (pix_b)),
                                      routed from smax (pix_c) / stie (aux input) and ca (chan)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = b * C * HW
    acc = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    if MODE == 0:
        mx = tl.full([BLOCK_C, BLOCK_P], float("-inf"), ACC)
        nans = tl.zeros([BLOCK_C, BLOCK_P], tl.int32)
    if MODE == 1:
        cm = tl.load(chan_ptr + b * C + c, mask=cmask, other=0.0)
        if FIRST:
            tie = tl.full([BLOCK_C, BLOCK_P], 2 ** 30, tl.int32)
        else:
            tie = tl.zeros([BLOCK_C, BLOCK_P], tl.int32)
    if MODE == 2:
        g = tl.load(chan_ptr + b * C + c, mask=cmask, other=0.0)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < HW
        m = cmask[:, None] & pmask[None, :]
        offs = base + c[:, None].to(tl.int64) * stride_c + p[None, :].to(tl.int64) * stride_p
        v = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC)
        if MODE == 0:
            acc += v
            mx = tl.maximum(mx, tl.where(m, v, float("-inf")))
            nans += (v != v).to(tl.int32)
        if MODE == 1:
            t = tl.load(dy_ptr + offs, mask=m, other=0.0).to(ACC) * v
            s = tl.load(pix_a_ptr + b * HW + p, mask=pmask, other=0.0)
            acc += t * s[None, :]
            tie = _tie(tie, m & (v == cm[:, None]), p[None, :], FIRST)
        if MODE == 2:
            gm = tl.load(pix_a_ptr + b * HW + p, mask=pmask, other=0.0)
            gx = tl.load(pix_b_ptr + b * HW + p, mask=pmask, other=0.0)
            if FIRST:
                st = tl.load(aux_ptr + b * HW + p, mask=pmask, other=-1)
                hit = c[:, None] == st[None, :]
            else:
                sm = tl.load(pix_c_ptr + b * HW + p, mask=pmask, other=0.0)
                hit = (v * g[:, None]) == sm[None, :]
            acc += v * (gm[None, :] + tl.where(hit, gx[None, :], 0.0))
    total = tl.sum(acc, axis=1)
    if MODE == 0:
        tl.store(out_ptr + b * C + c, total / HW, mask=cmask)
        res = tl.where(tl.sum(nans, axis=1) > 0, float("nan"), tl.max(mx, axis=1))
        tl.store(aux_ptr + b * C + c, res, mask=cmask)
    if MODE == 1:
        tl.store(out_ptr + b * C + c, total, mask=cmask)
        tl.store(aux_ptr + b * C + c, _tie_result(tie, 1, FIRST), mask=cmask)
    if MODE == 2:
        tl.store(out_ptr + b * C + c, total, mask=cmask)


@triton.jit
def _over_c_kernel(x_ptr, dy_ptr, ca_ptr, smax_ptr, out_ptr, aux_ptr, C, HW, stride_c, stride_p,
                   MODE: tl.constexpr, FIRST: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Per (n, h, w), over C, with u = x * ca.
    MODE 0 (spatial pool):           out = mean u, aux = max u
    MODE 1 (backward, spatial side): out = sum dy * u, aux = tie of u == smax."""
    b = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    base = b * C * HW
    acc = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    if MODE == 0:
        mx = tl.full([BLOCK_C, BLOCK_P], float("-inf"), ACC)
        nans = tl.zeros([BLOCK_C, BLOCK_P], tl.int32)
    else:
        sm = tl.load(smax_ptr + b * HW + p, mask=pmask, other=0.0)
        if FIRST:
            tie = tl.full([BLOCK_C, BLOCK_P], 2 ** 30, tl.int32)
        else:
            tie = tl.zeros([BLOCK_C, BLOCK_P], tl.int32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        m = cmask[:, None] & pmask[None, :]
        offs = base + c[:, None].to(tl.int64) * stride_c + p[None, :].to(tl.int64) * stride_p
        g = tl.load(ca_ptr + b * C + c, mask=cmask, other=0.0)
        u = tl.load(x_ptr + offs, mask=m, other=0.0).to(ACC) * g[:, None]
        if MODE == 0:
            acc += u
            mx = tl.maximum(mx, tl.where(m, u, float("-inf")))
            nans += (u != u).to(tl.int32)
        else:
            acc += tl.load(dy_ptr + offs, mask=m, other=0.0).to(ACC) * u
            tie = _tie(tie, m & (u == sm[None, :]), c[:, None], FIRST)
    total = tl.sum(acc, axis=0)
    if MODE == 0:
        tl.store(out_ptr + b * HW + p, total / C, mask=pmask)
        res = tl.where(tl.sum(nans, axis=0) > 0, float("nan"), tl.max(mx, axis=0))
        tl.store(aux_ptr + b * HW + p, res, mask=pmask)
    else:
        tl.store(out_ptr + b * HW + p, total, mask=pmask)
        tl.store(aux_ptr + b * HW + p, _tie_result(tie, 0, FIRST), mask=pmask)


@triton.jit
def _elementwise_kernel(x_ptr, dy_ptr, ca_ptr, sa_ptr, cmax_ptr, ctie_ptr, cgm_ptr, cgx_ptr,
                        smax_ptr, stie_ptr, sgm_ptr, sgx_ptr, out_ptr, N, C, HW,
                        CHANNELS_LAST: tl.constexpr, GRAD: tl.constexpr, FIRST: tl.constexpr,
                        BLOCK: tl.constexpr):
    """Forward: out = x * ca * sa. Backward (GRAD): out = dx of the backward_apply
    in csrc/schemas/cbam_schema.cpp."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < N
    if CHANNELS_LAST:
        c = i % C
        p = (i // C) % HW
    else:
        c = (i // HW) % C
        p = i % HW
    n = i // (C * HW)
    nc = n * C + c
    npix = n * HW + p
    g = tl.load(ca_ptr + nc, mask=m, other=0.0)
    s = tl.load(sa_ptr + npix, mask=m, other=0.0)
    x = tl.load(x_ptr + i, mask=m, other=0.0).to(g.dtype)
    if GRAD:
        dy = tl.load(dy_ptr + i, mask=m, other=0.0).to(g.dtype)
        if FIRST:
            s_hit = tl.load(stie_ptr + npix, mask=m, other=-1) == c
            c_hit = tl.load(ctie_ptr + nc, mask=m, other=-1) == p
        else:
            s_hit = x * g == tl.load(smax_ptr + npix, mask=m, other=0.0)
            c_hit = x == tl.load(cmax_ptr + nc, mask=m, other=0.0)
        inner = dy * s + tl.load(sgm_ptr + npix, mask=m, other=0.0)
        inner += tl.where(s_hit, tl.load(sgx_ptr + npix, mask=m, other=0.0), 0.0)
        out = g * inner + tl.load(cgm_ptr + nc, mask=m, other=0.0)
        out += tl.where(c_hit, tl.load(cgx_ptr + nc, mask=m, other=0.0), 0.0)
    else:
        out = x * g * s
    tl.store(out_ptr + i, out.to(out_ptr.dtype.element_ty), mask=m)


# ---------------------------------------------------------------- launchers

_BLOCK = 1024


def _blocks(x: torch.Tensor):
    """(BLOCK_C, BLOCK_P): tile the contiguous axis (positions for NCHW, channels for channels_last)."""
    return (64, 16) if layout(x)[0] == 1 else (8, 128)


def _over_hw(x, dy, pix_a, pix_b, pix_c, chan, out, aux, mode, first):
    B, C, H, W = x.shape
    _, tl_acc = acc_dtype(x)
    sc, sp = layout(x)
    bc, bp = _blocks(x)
    _over_hw_kernel[(B, triton.cdiv(C, bc))](
        x, dy, pix_a, pix_b, pix_c, chan, out, aux, C, H * W, sc, sp, MODE=mode, FIRST=first,
        ACC=tl_acc, BLOCK_C=bc, BLOCK_P=bp)


def _over_c(x, dy, ca, smax, out, aux, mode, first):
    B, C, H, W = x.shape
    _, tl_acc = acc_dtype(x)
    sc, sp = layout(x)
    bc, bp = _blocks(x)
    _over_c_kernel[(B, triton.cdiv(H * W, bp))](
        x, dy, ca, smax, out, aux, C, H * W, sc, sp, MODE=mode, FIRST=first, ACC=tl_acc,
        BLOCK_C=bc, BLOCK_P=bp)


def _elementwise(x, dy, ca, sa, ch, sp, out, grad, first):
    N, C = x.numel(), x.shape[1]
    _elementwise_kernel[(triton.cdiv(N, _BLOCK),)](
        x, dy, ca, sa, *ch, *sp, out, N, C, x.shape[2] * x.shape[3],
        CHANNELS_LAST=channels_last(x), GRAD=grad, FIRST=first, BLOCK=_BLOCK)


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::cbam_channel_pool_triton", mutates_args=())
def cbam_channel_pool_triton(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    mean, mx = cbam_ops.channel_pool_fake(x)
    if x.numel() == 0:
        return mean.fill_(float("nan")), mx.fill_(float("nan"))
    _over_hw(x, x, mean, mean, mean, mean, mean, mx, 0, False)
    return mean, mx


@torch.library.custom_op("attnkernels::cbam_spatial_pool_triton", mutates_args=())
def cbam_spatial_pool_triton(x: torch.Tensor, ca: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    mean, mx = cbam_ops.spatial_pool_fake(x, ca)
    if x.numel() == 0:
        return mean.fill_(float("nan")), mx.fill_(float("nan"))
    _over_c(x, x, ca, mean, mean, mx, 0, False)
    return mean, mx


@torch.library.custom_op("attnkernels::cbam_apply_triton", mutates_args=())
def cbam_apply_triton(x: torch.Tensor, ca: torch.Tensor, sa: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x)
    if x.numel():
        _elementwise(x, x, ca, sa, [ca] * 4, [sa] * 4, y, False, False)
    return y


@torch.library.custom_op("attnkernels::cbam_backward_reduce_triton", mutates_args=())
def cbam_backward_reduce_triton(dy: torch.Tensor, x: torch.Tensor, ca: torch.Tensor,
                                sa: torch.Tensor, cmax: torch.Tensor, smax: torch.Tensor,
                                first_max: bool
                                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dca, dsa = torch.zeros_like(ca), torch.zeros_like(sa)
    ctie = torch.zeros(ca.shape, device=x.device, dtype=torch.int32)
    stie = torch.zeros(sa.shape, device=x.device, dtype=torch.int32)
    if x.numel():
        _over_hw(x, dy, sa, sa, sa, cmax, dca, ctie, 1, first_max)
        _over_c(x, dy, ca, smax, dsa, stie, 1, first_max)
    return dca, dsa, ctie, stie


@torch.library.custom_op("attnkernels::cbam_spatial_pool_backward_triton", mutates_args=())
def cbam_spatial_pool_backward_triton(x: torch.Tensor, ca: torch.Tensor, smax: torch.Tensor,
                                      stie: torch.Tensor, sgmean: torch.Tensor,
                                      sgmax: torch.Tensor, first_max: bool) -> torch.Tensor:
    dca = torch.zeros_like(ca)
    if x.numel():
        _over_hw(x, x, sgmean, sgmax, smax, ca, dca, stie, 2, first_max)
    return dca


@torch.library.custom_op("attnkernels::cbam_backward_apply_triton", mutates_args=())
def cbam_backward_apply_triton(dy: torch.Tensor, x: torch.Tensor, ca: torch.Tensor,
                               sa: torch.Tensor, cmax: torch.Tensor, ctie: torch.Tensor,
                               cgmean: torch.Tensor, cgmax: torch.Tensor, smax: torch.Tensor,
                               stie: torch.Tensor, sgmean: torch.Tensor, sgmax: torch.Tensor,
                               first_max: bool) -> torch.Tensor:
    dx = torch.empty_like(x)
    if x.numel():
        _elementwise(x, dy, ca, sa, [cmax, ctie, cgmean, cgmax], [smax, stie, sgmean, sgmax], dx,
                     True, first_max)
    return dx



# ---------------------------------------------------------------- the composite op
# on the Triton passes (the native backends' twin: csrc/composite/cbam.cpp)

@torch.library.custom_op("attnkernels::cbam_forward_triton", mutates_args=())
def cbam_forward_triton(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                        w2: Optional[torch.Tensor], b2: Optional[torch.Tensor],
                        conv_w: Optional[torch.Tensor], conv_b: Optional[torch.Tensor],
                        bn_w: Optional[torch.Tensor], bn_b: Optional[torch.Tensor],
                        bn_mean: Optional[torch.Tensor], bn_var: Optional[torch.Tensor],
                        config: List[int], eps: float) -> Tuple[
                            torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                            torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, batch mean, unbiased batch variance, *saved). The statistics are
    those of the spatial conv's output (empty unless config's BatchNorm uses
    batch statistics). saved, what the backward needs: cmean, cmax, h, z, ca (the
    channel gate's; ca as the forward computed it, since the backward finds the
    max positions by comparing x * ca with the pooled maxima), smean, smax, sa,
    q, qn, save_mean, save_invstd (the spatial gate's; see ``cbam_ops.channel_gate`` and
    ``cbam_ops.spatial_gate``)."""
    channel_pool, spatial_pool, apply = cbam_ops.passes("triton")[:3]
    with torch.autocast(x.device.type, enabled=False):
        if cbam_ops.has_channel(config):
            cmean, cmax = channel_pool(x)
            ca, h, z = cbam_ops.channel_gate(cmean, cmax, w1, b1, w2, b2, config)
            if w2 is None:  # h is z, and the backward does not need it
                h = cbam_ops.empty_stats(x)
        else:
            cmean, cmax, h, z, ca = cbam_ops.without_channel_gate(x)
        if not cbam_ops.has_spatial(config):
            smean, smax = cbam_ops.pixel_stats(x).zero_(), cbam_ops.pixel_stats(x).zero_()
            sa = torch.ones_like(smean)
            empty = [cbam_ops.empty_stats(x) for _ in range(6)]
            return (apply(x, ca, sa), *empty[:2], cmean, cmax, h, z, ca, smean, smax, sa,
                    *empty[2:])
        smean, smax = spatial_pool(x, ca)
        sa, q, qn, save_mean, save_invstd, mean, var = cbam_ops.spatial_gate(
            smean, smax, conv_w, conv_b, bn_w, bn_b, bn_mean, bn_var, config, eps)
        if config[cbam_ops.Config.BN] == cbam_ops.BN_NONE:  # q is qn: the backward needs one
            q = cbam_ops.empty_stats(x)
        return (apply(x, ca, sa), mean, var, cmean, cmax, h, z, ca, smean, smax, sa, q, qn,
                save_mean, save_invstd)


register_composite("cbam", cbam_ops.PASS_FAKES, cbam_ops.forward_fake, cbam_ops.backward,
                   cbam_ops.SAVED_OUTPUTS, backend="triton")
