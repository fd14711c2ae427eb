"""CoT attention's softmax gate in Triton: kernels, launchers, op
registration (semantics in csrc/schemas/cot_schema.cpp).

Forward: statistics (per (n, c): the max of att and the sum of exp(att -
max), in one read, the sum rescaled as the max grows) -> apply (y = k1 + w
v): two launches. Backward: r = sum w dy v per (n, c) -> apply (datt, dv):
two launches. No atomics; deterministic.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

from . import op as cot_ops
from .._core.ops import call_forward, register_forward_backward
from .._core.triton import (acc_dtype, channels_last, element_block, layout, load_tile,
                            plane_blocks, plane_grid)


@triton.jit
def _stats_kernel(att_ptr, max_ptr, inv_ptr, C, HW, stride_c, stride_p, ACC: tl.constexpr,
                  BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """max and inv_sum per (n, c) in one read of att: a running max, the sum
    so far rescaled by exp(old max - new max) when the max grows."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = b * C * HW
    m = tl.full([BLOCK_C], float("-inf"), ACC)
    s = tl.zeros([BLOCK_C], ACC)
    for p0 in range(0, HW, BLOCK_P):
        a, msk, _ = load_tile(att_ptr, base, c, cmask, p0, HW, stride_c, stride_p, ACC, BLOCK_P)
        grown = tl.maximum(m, tl.max(tl.where(msk, a, float("-inf")), axis=1))
        # (equal maxima, -inf ones included: no rescale, and no -inf - -inf)
        s = s * tl.where(grown == m, 1.0, tl.exp(m - grown))
        s += tl.sum(tl.where(msk, tl.exp(a - grown[:, None]), 0.0), axis=1)
        m = grown
    tl.store(max_ptr + b * C + c, m, mask=cmask)
    tl.store(inv_ptr + b * C + c, 1.0 / s, mask=cmask)


@triton.jit
def _grad_sums_kernel(att_ptr, v_ptr, dy_ptr, max_ptr, inv_ptr, r_ptr, C, HW, stride_c,
                      stride_p, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """r = sum over H*W of w dy v per (n, c)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = b * C * HW
    m = tl.load(max_ptr + b * C + c, mask=cmask, other=0.0)
    inv = tl.load(inv_ptr + b * C + c, mask=cmask, other=0.0)
    s = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    for p0 in range(0, HW, BLOCK_P):
        a, msk, offs = load_tile(att_ptr, base, c, cmask, p0, HW, stride_c, stride_p, ACC,
                                 BLOCK_P)
        g = tl.load(dy_ptr + offs, mask=msk, other=0.0).to(ACC)
        v = tl.load(v_ptr + offs, mask=msk, other=0.0).to(ACC)
        w = tl.exp(a - m[:, None]) * inv[:, None]
        s += tl.where(msk, w * (g * v), 0.0)
    tl.store(r_ptr + b * C + c, tl.sum(s, axis=1), mask=cmask)


@triton.jit
def _apply_kernel(att_ptr, v_ptr, other_ptr, max_ptr, inv_ptr, r_ptr, out_ptr, out2_ptr, N, C, H,
                  W, GRAD: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Forward: y = k1 + w v (other = k1). Backward (GRAD, other = dy):
    datt = w (dy v - r), dv = dy w."""
    e, em, n, c, _, _ = element_block(N, C, H, W, CHANNELS_LAST, BLOCK)
    nc = n * C + c
    a = tl.load(att_ptr + e, mask=em, other=0.0).to(ACC)
    w = tl.exp(a - tl.load(max_ptr + nc, mask=em, other=0.0)) * tl.load(inv_ptr + nc, mask=em,
                                                                          other=0.0)
    v = tl.load(v_ptr + e, mask=em, other=0.0).to(ACC)
    o = tl.load(other_ptr + e, mask=em, other=0.0).to(ACC)
    if GRAD:
        r = tl.load(r_ptr + nc, mask=em, other=0.0)
        tl.store(out_ptr + e, (w * (o * v - r)).to(out_ptr.dtype.element_ty), mask=em)
        tl.store(out2_ptr + e, (o * w).to(out2_ptr.dtype.element_ty), mask=em)
    else:
        tl.store(out_ptr + e, (o + w * v).to(out_ptr.dtype.element_ty), mask=em)


# ---------------------------------------------------------------- launchers

_APPLY_BLOCK = 512


def _apply(att, v, other, mx, inv, r, out, out2, grad: bool):
    B, C, H, W = att.shape
    N = att.numel()
    _apply_kernel[(triton.cdiv(N, _APPLY_BLOCK),)](
        att, v, other, mx, inv, mx if r is None else r, out, out if out2 is None else out2, N, C,
        H, W, GRAD=grad, CHANNELS_LAST=channels_last(att), ACC=acc_dtype(att)[1],
        BLOCK=_APPLY_BLOCK)


def _check_like(t, att, name):
    same = (t.is_contiguous(memory_format=torch.channels_last) if channels_last(att)
            else t.is_contiguous())
    if t.shape != att.shape or t.dtype != att.dtype or t.device != att.device or not same:
        raise RuntimeError(f"{name} must match att in shape, dtype and memory format (got "
                           f"{tuple(t.shape)} {t.stride()} {t.dtype} for att "
                           f"{tuple(att.shape)} {att.stride()} {att.dtype})")


def _cot_forward(att, v, k1):
    _check_like(v, att, "v")
    _check_like(k1, att, "k1")
    acc, tl_acc = acc_dtype(att)
    B, C, H, W = att.shape
    y = torch.empty_like(att)
    mx = torch.empty((B, C), device=att.device, dtype=acc)
    inv = torch.empty_like(mx)
    if att.numel() == 0:
        mx.fill_(float("nan"))
        inv.fill_(float("nan"))
        return y, mx, inv
    stride_c, stride_p = layout(att)
    block_c, block_p = plane_blocks(att)
    _stats_kernel[plane_grid(att, block_c)](att, mx, inv, C, H * W, stride_c, stride_p,
                                              ACC=tl_acc, BLOCK_C=block_c, BLOCK_P=block_p)
    _apply(att, v, k1, mx, inv, None, y, None, False)
    return y, mx, inv


def _cot_backward(dy, att, v, mx, inv):
    _check_like(v, att, "v")
    _check_like(dy, att, "dy")
    _, tl_acc = acc_dtype(att)
    datt, dv = torch.empty_like(att), torch.empty_like(att)
    if att.numel() == 0:
        return datt, dv
    B, C, H, W = att.shape
    r = torch.empty_like(mx)
    stride_c, stride_p = layout(att)
    block_c, block_p = plane_blocks(att)
    _grad_sums_kernel[plane_grid(att, block_c)](att, v, dy, mx, inv, r, C, H * W, stride_c,
                                                  stride_p, ACC=tl_acc, BLOCK_C=block_c,
                                                  BLOCK_P=block_p)
    _apply(att, v, dy, mx, inv, r, datt, dv, True)
    return datt, dv


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::cot_forward_triton", mutates_args=())
def cot_forward_triton(att: torch.Tensor, v: torch.Tensor, k1: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _cot_forward(att, v, k1)


@torch.library.custom_op("attnkernels::cot_backward_triton", mutates_args=())
def cot_backward_triton(dy: torch.Tensor, att: torch.Tensor, v: torch.Tensor, max: torch.Tensor,
                        inv_sum: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return _cot_backward(dy, att, v, max, inv_sum)


register_forward_backward("cot", cot_ops.forward_fake, cot_ops.backward_fake,
                          cot_ops.make_autograd, backend="triton")


def cot_forward(att, v, k1) -> torch.Tensor:
    return call_forward(torch.ops.attnkernels.cot_forward_triton, (att, v, k1))[0]
