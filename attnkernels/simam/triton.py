"""SimAM in Triton: kernels, launchers, op registration (semantics in
csrc/schemas/simam_schema.cpp).

Forward: statistics (one read of x; exact per chunk of positions, chunks
merged in order) -> apply (read x, write y): two launches. Backward: sums A
and B and the per-(n, c) coefficients (one read of dy and x) -> apply (read dy
and x, write dx): two launches. No atomics; deterministic.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

from . import op as simam_ops
from .._core.ops import call_forward, register_forward_backward
from .._core.triton import (acc_dtype, channels_last, element_block, layout, load_tile,
                            plane_blocks, plane_grid, plane_mean_m2, sigmoid)


@triton.jit
def _gate(dev, denom):
    """s = sigmoid(d / denom + 0.5), d = dev^2, as upstream writes it."""
    return sigmoid(dev * dev / denom + 0.5)


@triton.jit
def _stats_kernel(x_ptr, lam_ptr, mean_ptr, denom_ptr, C, HW, stride_c, stride_p,
                  ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    mean, m2 = plane_mean_m2(x_ptr, b * C * HW, c, cmask, HW, stride_c, stride_p, ACC, BLOCK_C,
                             BLOCK_P)
    lam = tl.load(lam_ptr)
    tl.store(mean_ptr + b * C + c, mean, mask=cmask)
    tl.store(denom_ptr + b * C + c, 4.0 * (m2 / (HW - 1) + lam), mask=cmask)


@triton.jit
def _grad_sums_kernel(x_ptr, dy_ptr, mean_ptr, denom_ptr, coefs_ptr, C, HW, stride_c,
                      stride_p, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_P: tl.constexpr):
    """A = sum t (x - mean), B = sum t d with t = dy x s (1 - s), then the
    coefficients (k1, k2, k3) of dx = dy s + (x - mean)(k1 t - k2) - k3."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = b * C * HW
    mu = tl.load(mean_ptr + b * C + c, mask=cmask, other=0.0)
    den = tl.load(denom_ptr + b * C + c, mask=cmask, other=1.0)
    sa = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    sb = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    for p0 in range(0, HW, BLOCK_P):
        v, m, offs = load_tile(x_ptr, base, c, cmask, p0, HW, stride_c, stride_p, ACC, BLOCK_P)
        g = tl.load(dy_ptr + offs, mask=m, other=0.0).to(ACC)
        dev = v - mu[:, None]
        s = _gate(dev, den[:, None])
        t = tl.where(m, g * v * s * (1.0 - s), 0.0)
        sa += t * dev
        sb += t * (dev * dev)
    A = tl.sum(sa, axis=1)
    B = tl.sum(sb, axis=1)
    a = 1.0 / den
    row = (b * C + c) * 3
    tl.store(coefs_ptr + row, 2.0 * a, mask=cmask)
    tl.store(coefs_ptr + row + 1, 8.0 * a * a * B / (HW - 1), mask=cmask)
    tl.store(coefs_ptr + row + 2, 2.0 * a * A / HW, mask=cmask)


@triton.jit
def _apply_kernel(x_ptr, dy_ptr, mean_ptr, denom_ptr, coefs_ptr, out_ptr, N, C, H, W,
                  GRAD: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Forward: y = x s. Backward (GRAD): dx = dy s + (x - mean)(k1 t - k2) - k3."""
    e, em, n, c, _, _ = element_block(N, C, H, W, CHANNELS_LAST, BLOCK)
    nc = n * C + c
    v = tl.load(x_ptr + e, mask=em, other=0.0).to(ACC)
    dev = v - tl.load(mean_ptr + nc, mask=em, other=0.0)
    s = _gate(dev, tl.load(denom_ptr + nc, mask=em, other=1.0))
    if GRAD:
        g = tl.load(dy_ptr + e, mask=em, other=0.0).to(ACC)
        t = g * v * s * (1.0 - s)
        k1 = tl.load(coefs_ptr + nc * 3, mask=em, other=0.0)
        k2 = tl.load(coefs_ptr + nc * 3 + 1, mask=em, other=0.0)
        k3 = tl.load(coefs_ptr + nc * 3 + 2, mask=em, other=0.0)
        r = g * s + dev * (k1 * t - k2) - k3
    else:
        r = v * s
    tl.store(out_ptr + e, r.to(out_ptr.dtype.element_ty), mask=em)


# ---------------------------------------------------------------- launchers

_APPLY_BLOCK = 512


def _apply(x, dy, mean, denom, coefs, out, grad: bool):
    B, C, H, W = x.shape
    N = x.numel()
    _apply_kernel[(triton.cdiv(N, _APPLY_BLOCK),)](
        x, x if dy is None else dy, mean, denom, mean if coefs is None else coefs, out, N, C, H,
        W, GRAD=grad, CHANNELS_LAST=channels_last(x), ACC=acc_dtype(x)[1], BLOCK=_APPLY_BLOCK)


def _simam_forward(x, e_lambda):
    acc, tl_acc = acc_dtype(x)
    B, C, H, W = x.shape
    y = torch.empty_like(x)
    mean = torch.empty((B, C), device=x.device, dtype=acc)
    denom = torch.empty_like(mean)
    if x.numel() == 0:
        mean.fill_(float("nan"))
        denom.fill_(float("nan"))
        return y, mean, denom
    lam = torch.full((1,), e_lambda, device=x.device, dtype=acc)  # exact for fp64 too
    stride_c, stride_p = layout(x)
    block_c, block_p = plane_blocks(x)
    _stats_kernel[plane_grid(x, block_c)](x, lam, mean, denom, C, H * W, stride_c, stride_p,
                                            ACC=tl_acc, BLOCK_C=block_c, BLOCK_P=block_p)
    _apply(x, None, mean, denom, None, y, False)
    return y, mean, denom


def _simam_backward(dy, x, mean, denom):
    acc, tl_acc = acc_dtype(x)
    B, C, H, W = x.shape
    dx = torch.empty_like(x)
    if x.numel() == 0:
        return dx
    coefs = torch.empty((B, C, 3), device=x.device, dtype=acc)
    stride_c, stride_p = layout(x)
    block_c, block_p = plane_blocks(x)
    _grad_sums_kernel[plane_grid(x, block_c)](x, dy, mean, denom, coefs, C, H * W, stride_c,
                                                stride_p, ACC=tl_acc, BLOCK_C=block_c,
                                                BLOCK_P=block_p)
    _apply(x, dy, mean, denom, coefs, dx, True)
    return dx


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::simam_forward_triton", mutates_args=())
def simam_forward_triton(x: torch.Tensor, e_lambda: float
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _simam_forward(x, e_lambda)


@torch.library.custom_op("attnkernels::simam_backward_triton", mutates_args=())
def simam_backward_triton(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor,
                          denom: torch.Tensor) -> torch.Tensor:
    return _simam_backward(dy, x, mean, denom)


register_forward_backward("simam", simam_ops.forward_fake, simam_ops.backward_fake,
                          simam_ops.make_autograd, backend="triton")


def simam_forward(x, e_lambda: float) -> torch.Tensor:
    return call_forward(torch.ops.attnkernels.simam_forward_triton, (x,), e_lambda)[0]
