"""Selective Kernel attention in Triton: kernels, launchers, op registration
(semantics in csrc/schemas/sk_schema.cpp).

Pool: one launch, one read of each branch. Select forward: one launch, the
softmax over the branches per element from the (B, K, C) logits, one read of
each branch and a write of y. Select backward: one launch per (sample,
channel block): one read of dy and of each branch, writing each branch's
gradient and summing g_k = sum_hw dy * branch_k, then the logits' gradient.
The branches' pointers travel as a tuple (K is a compile-time constant). No
atomics; deterministic.
"""
from typing import List, Tuple

import torch
import triton
import triton.language as tl

from . import op as sk_ops
from .._core.triton import (acc_dtype, channels_last, element_block, layout, load_tile,
                            plane_blocks)


@triton.jit
def _softmax_parts(l_ptr, row, C, mask, K: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """(max, sum of exp(l - max)) over the K logits at row + k * C; the max
    propagates NaN, as torch.softmax's."""
    m = tl.load(l_ptr + row, mask=mask, other=0.0)
    for k in tl.static_range(1, K):
        v = tl.load(l_ptr + row + k * C, mask=mask, other=0.0)
        m = tl.where((v > m) | (v != v), v, m)
    den = tl.zeros([BLOCK], ACC)
    for k in tl.static_range(K):
        den += tl.exp(tl.load(l_ptr + row + k * C, mask=mask, other=0.0) - m)
    return m, den


@triton.jit
def _pool_kernel(f_ptrs, s_ptr, C, HW, stride_c, stride_p, K: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = b * C * HW
    acc = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    for k in tl.static_range(K):
        for p0 in range(0, HW, BLOCK_P):
            v, _, _ = load_tile(f_ptrs[k], base, c, cmask, p0, HW, stride_c, stride_p, ACC,
                                BLOCK_P)
            acc += v
    s = tl.sum(acc, axis=1) / HW
    tl.store(s_ptr + b * C + c, s.to(s_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _select_kernel(f_ptrs, l_ptr, y_ptr, N, C, H, W, K: tl.constexpr,
                   CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """y = sum_k softmax_k(logits[n, :, c]) branch_k, the softmax per element."""
    e, em, n, c, _, _ = element_block(N, C, H, W, CHANNELS_LAST, BLOCK)
    row = n * K * C + c
    m, den = _softmax_parts(l_ptr, row, C, em, K, ACC, BLOCK)
    y = tl.zeros([BLOCK], ACC)
    for k in tl.static_range(K):
        a = tl.exp(tl.load(l_ptr + row + k * C, mask=em, other=0.0) - m) / den
        y += a * tl.load(f_ptrs[k] + e, mask=em, other=0.0).to(ACC)
    tl.store(y_ptr + e, y.to(y_ptr.dtype.element_ty), mask=em)


@triton.jit
def _select_grad_kernel(f_ptrs, df_ptrs, dy_ptr, l_ptr, dl_ptr, C, HW, stride_c, stride_p,
                        K: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                        BLOCK_P: tl.constexpr):
    """dbranch_k = a_k dy and g_k = sum_hw dy * branch_k per (b, c), then
    dlogits_k = a_k (g_k - sum_j a_j g_j) (g_k kept in dl meanwhile)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = b * C * HW
    row = b * K * C + c
    m, den = _softmax_parts(l_ptr, row, C, cmask, K, ACC, BLOCK_C)
    dot = tl.zeros([BLOCK_C], ACC)
    for k in tl.static_range(K):
        a = tl.exp(tl.load(l_ptr + row + k * C, mask=cmask, other=0.0) - m) / den
        acc = tl.zeros([BLOCK_C, BLOCK_P], ACC)
        for p0 in range(0, HW, BLOCK_P):
            f, msk, offs = load_tile(f_ptrs[k], base, c, cmask, p0, HW, stride_c, stride_p, ACC,
                                     BLOCK_P)
            d = tl.load(dy_ptr + offs, mask=msk, other=0.0).to(ACC)
            acc += d * f
            tl.store(df_ptrs[k] + offs, (a[:, None] * d).to(df_ptrs[k].dtype.element_ty),
                     mask=msk)
        g = tl.sum(acc, axis=1)
        dot += a * g
        tl.store(dl_ptr + row + k * C, g, mask=cmask)
    tl.debug_barrier()  # the g_k stored above, read back by this program
    for k in tl.static_range(K):
        a = tl.exp(tl.load(l_ptr + row + k * C, mask=cmask, other=0.0) - m) / den
        g = tl.load(dl_ptr + row + k * C, mask=cmask, other=0.0)
        tl.store(dl_ptr + row + k * C, a * (g - dot), mask=cmask)


# ---------------------------------------------------------------- launchers

_APPLY_BLOCK = 512


def _check(branches: List[torch.Tensor], logits=None) -> None:
    """The compiled ops' argument checks (csrc/common/sk.h), for the Triton twins."""
    if not 1 <= len(branches) <= 8:
        raise RuntimeError(f"branches must hold 1 to 8 tensors, got {len(branches)}")
    x = branches[0]
    for k, f in enumerate(branches[1:], 1):
        if f.shape != x.shape or f.dtype != x.dtype or f.stride() != x.stride() \
                or f.device != x.device:
            raise RuntimeError(f"branches[{k}] must match branches[0] in shape, dtype and "
                               "memory format")
    if logits is not None and tuple(logits.shape) != (x.shape[0], len(branches), x.shape[1]):
        raise RuntimeError(f"logits must have shape ({x.shape[0]}, {len(branches)}, "
                           f"{x.shape[1]}) (batch, branch, channel), got {tuple(logits.shape)}")


def _sk_pool(branches):
    _check(branches)
    x = branches[0]
    B, C, H, W = x.shape
    s = torch.empty((B, C), device=x.device, dtype=x.dtype)
    if s.numel() == 0:
        return s
    if x.numel() == 0:
        return s.fill_(float("nan"))  # as torch.mean
    stride_c, stride_p = layout(x)
    block_c, block_p = plane_blocks(x)
    _pool_kernel[(B, triton.cdiv(C, block_c))](
        tuple(branches), s, C, H * W, stride_c, stride_p, K=len(branches),
        ACC=acc_dtype(x)[1], BLOCK_C=block_c, BLOCK_P=block_p)
    return s


def _sk_forward(branches, logits):
    _check(branches, logits)
    x = branches[0]
    B, C, H, W = x.shape
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    acc, tl_acc = acc_dtype(x)
    _select_kernel[(triton.cdiv(x.numel(), _APPLY_BLOCK),)](
        tuple(branches), logits.to(acc).contiguous(), y, x.numel(), C, H, W, K=len(branches),
        CHANNELS_LAST=channels_last(x), ACC=tl_acc, BLOCK=_APPLY_BLOCK)
    return y


def _sk_backward(dy, branches, logits):
    _check(branches, logits)
    x = branches[0]
    B, C, H, W = x.shape
    acc, tl_acc = acc_dtype(x)
    dbranches = [torch.empty_like(f) for f in branches]
    dl = torch.zeros((B, len(branches), C), device=x.device, dtype=acc)
    if x.numel() != 0:
        stride_c, stride_p = layout(x)
        block_c, block_p = plane_blocks(x)
        _select_grad_kernel[(B, triton.cdiv(C, block_c))](
            tuple(branches), tuple(dbranches), dy, logits.to(acc).contiguous(), dl, C, H * W,
            stride_c, stride_p, K=len(branches), ACC=tl_acc, BLOCK_C=block_c, BLOCK_P=block_p)
    return dbranches, dl.to(logits.dtype)


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::sk_pool_triton", mutates_args=())
def sk_pool_triton(branches: List[torch.Tensor]) -> torch.Tensor:
    return _sk_pool(branches)


@torch.library.custom_op("attnkernels::sk_forward_triton", mutates_args=())
def sk_forward_triton(branches: List[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    return _sk_forward(branches, logits)


@torch.library.custom_op("attnkernels::sk_backward_triton", mutates_args=())
def sk_backward_triton(dy: torch.Tensor, branches: List[torch.Tensor], logits: torch.Tensor
                              ) -> Tuple[List[torch.Tensor], torch.Tensor]:
    return _sk_backward(dy, branches, logits)


sk_ops.register("_triton")
