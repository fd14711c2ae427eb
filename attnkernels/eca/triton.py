"""Efficient Channel Attention in Triton: kernels, launchers, op registration.

Forward: pool (one read of x) -> per-sample gate (a k-tap conv over the pooled
channels) -> apply (read x, write y): three launches. Backward: reduce
sum(dy * x) -> per-sample gate backward -> apply (read dy, write dx): three
launches; the conv's weight and bias gradients are formed in
attnkernels/ops/eca.py, shared with the C++ backends.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import op as eca_ops
from .._core.ops import call_forward, register_forward_backward
from .._core import channel_gate_triton as _channel_gate
from .._core.triton import acc_dtype, gate_forward, store_gate_and_grad


@triton.jit
def _source(c, shift, C, CIRCULAR: tl.constexpr):
    """(index, valid) of channel c + shift with zero (invalid outside [0, C)) or circular padding."""
    i = c + shift
    if CIRCULAR:
        i = i % C
        i = tl.where(i < 0, i + C, i)
        return i, c < C
    return i, (i >= 0) & (i < C) & (c < C)


@triton.jit
def _conv(s_row, w_ptr, b_ptr, c, C, K, PAD, HAS_BIAS: tl.constexpr, CIRCULAR: tl.constexpr,
          ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """z[c] = bias + sum_j w[j] * s[c + j - PAD] for a block of channels c."""
    z = tl.zeros([BLOCK_C], ACC)
    if HAS_BIAS:
        z += tl.load(b_ptr)
    for j in range(0, K):
        i, ok = _source(c, j - PAD, C, CIRCULAR)
        z += tl.load(w_ptr + j) * tl.load(s_row + i, mask=ok, other=0.0)
    return z


@triton.jit
def _eca_gate_kernel(s_ptr, w_ptr, b_ptr, g_ptr, C, K, PAD, HAS_BIAS: tl.constexpr,
                     CIRCULAR: tl.constexpr, GATE: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    z = _conv(s_ptr + b * C, w_ptr, b_ptr, c, C, K, PAD, HAS_BIAS, CIRCULAR, ACC, BLOCK_C)
    tl.store(g_ptr + b * C + c, gate_forward(z, GATE), mask=c < C)


@triton.jit
def _eca_gate_backward_kernel(s_ptr, dg_ptr, w_ptr, b_ptr, g_ptr, dz_ptr, dmean_ptr, C, K, PAD,
                              HW, HAS_BIAS: tl.constexpr, CIRCULAR: tl.constexpr,
                              GATE: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per sample: g and dz = dg * gate'(z) for every channel, then the conv's
    transpose, d mean[i] = sum_j w[j] * dz[i - j + PAD] / HW."""
    b = tl.program_id(0).to(tl.int64)
    row = b * C
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = c < C
        z = _conv(s_ptr + row, w_ptr, b_ptr, c, C, K, PAD, HAS_BIAS, CIRCULAR, ACC, BLOCK_C)
        store_gate_and_grad(z, dg_ptr, g_ptr, dz_ptr, row + c, cm, GATE)
    tl.debug_barrier()  # dz of every channel is read back below
    for i0 in range(0, C, BLOCK_C):
        i = i0 + tl.arange(0, BLOCK_C)
        ds = tl.zeros([BLOCK_C], ACC)
        for j in range(0, K):
            c, ok = _source(i, PAD - j, C, CIRCULAR)
            ds += tl.load(w_ptr + j) * tl.load(dz_ptr + row + c, mask=ok, other=0.0)
        tl.store(dmean_ptr + row + i, ds / HW, mask=i < C)


# ---------------------------------------------------------------- launchers

def _block_c(C: int) -> int:
    return min(1024, triton.next_power_of_2(max(C, 16)))


def _eca_forward(x, weight, bias, circular, gate):
    acc, tl_acc = acc_dtype(x)
    B, C = x.shape[:2]
    y = torch.empty_like(x)
    pooled = torch.empty((B, C), device=x.device, dtype=acc)
    if x.numel() == 0:
        pooled.fill_(float("nan"))
        return y, pooled
    w = weight.to(acc).contiguous()
    b = bias.to(acc).contiguous() if bias is not None else w
    k = w.shape[0]
    _channel_gate.pool(x, pooled, pooled, False)
    g = torch.empty((B, C), device=x.device, dtype=acc)
    block_c = _block_c(C)
    _eca_gate_kernel[(B, triton.cdiv(C, block_c))](
        pooled, w, b, g, C, k, (k - 1) // 2, HAS_BIAS=bias is not None, CIRCULAR=circular,
        GATE=gate, ACC=tl_acc, BLOCK_C=block_c)
    _channel_gate.apply(x, g, y)
    return y, pooled


def _eca_backward(dy, x, pooled, weight, bias, circular, gate):
    acc, tl_acc = acc_dtype(x)
    B, C, H, W = x.shape
    dx = torch.empty_like(x)
    dz = torch.zeros((B, C), device=x.device, dtype=acc)
    if x.numel() == 0:
        return dx, dz
    w = weight.to(acc).contiguous()
    b = bias.to(acc).contiguous() if bias is not None else w
    k = w.shape[0]
    dg = torch.empty((B, C), device=x.device, dtype=acc)
    _channel_gate.reduce_grad(dy, x, dg, dg, dg, False)
    g = torch.empty((B, C), device=x.device, dtype=acc)
    dmean = torch.empty((B, C), device=x.device, dtype=acc)
    _eca_gate_backward_kernel[(B,)](
        pooled, dg, w, b, g, dz, dmean, C, k, (k - 1) // 2, H * W,
        HAS_BIAS=bias is not None, CIRCULAR=circular, GATE=gate, ACC=tl_acc,
        BLOCK_C=_block_c(C))
    _channel_gate.apply_grad(dy, x, g, dmean, g, g, dx, False)
    return dx, dz


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::eca_forward_triton", mutates_args=())
def eca_forward_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                       circular: bool, gate: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return _eca_forward(x, weight, bias, circular, gate)


@torch.library.custom_op("attnkernels::eca_backward_triton", mutates_args=())
def eca_backward_triton(dy: torch.Tensor, x: torch.Tensor, pooled: torch.Tensor,
                        weight: torch.Tensor, bias: Optional[torch.Tensor], circular: bool,
                        gate: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return _eca_backward(dy, x, pooled, weight, bias, circular, gate)


register_forward_backward("eca", eca_ops.forward_fake, eca_ops.backward_fake,
                          eca_ops.make_autograd, backend="triton")


def eca_forward(x, weight, bias, circular: bool, gate: int) -> torch.Tensor:
    return call_forward(torch.ops.attnkernels.eca_forward_triton, (x, weight, bias), circular,
                        gate)[0]
