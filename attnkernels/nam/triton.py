"""NAM's channel attention in Triton: kernels, launchers, op registration
(semantics in csrc/schemas/nam_schema.cpp).

Forward with batch statistics: per-(n, c) statistics (one read of x) ->
per-channel merge and fold -> apply (read x, write y): three launches; with
running statistics: fold -> apply, two. Backward: per-(n, c) sums (one read of
dy and x) -> per-channel merge (dweight, dbias, the coefficients) -> apply
(read dy and x, write dx): three launches. No atomics; deterministic.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import op as nam_ops
from .._core.ops import register_forward_backward
from .._core.triton import (acc_dtype, channels_last, element_block, layout, load_tile,
                            plane_blocks, plane_mean_m2, sigmoid)

_CHANNEL_BLOCK = 128  # channels per program of the per-channel kernels


@triton.jit
def _abs_sum(gamma_ptr, C, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """sum |gamma| over the C channels (every program the same order)."""
    total = tl.zeros([BLOCK], ACC)
    for c0 in range(0, C, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        total += tl.abs(tl.load(gamma_ptr + c, mask=c < C, other=0.0).to(ACC))
    return tl.sum(total, axis=0)


@triton.jit
def _stats_kernel(x_ptr, m_ptr, m2_ptr, C, HW, stride_c, stride_p, ACC: tl.constexpr,
                  BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Per (n, c): the mean and sum of squared deviations over H*W."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    mean, m2 = plane_mean_m2(x_ptr, b * C * HW, c, cmask, HW, stride_c, stride_p, ACC, BLOCK_C,
                             BLOCK_P)
    tl.store(m_ptr + b * C + c, mean, mask=cmask)
    tl.store(m2_ptr + b * C + c, m2, mask=cmask)


@triton.jit
def _fold_kernel(m_ptr, m2_ptr, eps_ptr, gamma_ptr, beta_ptr, mean_ptr, invstd_ptr, var_ptr,
                 coefs_ptr, N, C, HW, BATCH: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    """BATCH: the channel's statistics from the per-(n, c) ones (the mean of
    the plane means; M2 = sum m2 + HW sum (m - mean)^2, the samples in order)
    into mean, invstd and the unbiased var. Then (a, b) of z = (x - mean) a + b:
    a = invstd gamma w, b = beta w, w = |gamma| / sum |gamma|."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    if BATCH:
        total = tl.zeros([BLOCK_C], ACC)
        for n in range(0, N):
            total += tl.load(m_ptr + n * C + c, mask=cm, other=0.0)
        mean = total / N
        within = tl.zeros([BLOCK_C], ACC)
        between = tl.zeros([BLOCK_C], ACC)
        for n in range(0, N):
            d = tl.load(m_ptr + n * C + c, mask=cm, other=0.0) - mean
            within += tl.load(m2_ptr + n * C + c, mask=cm, other=0.0)
            between += d * d
        M2 = within + HW * between
        count = (N * HW).to(ACC)
        invstd = 1.0 / tl.sqrt(M2 / count + tl.load(eps_ptr))
        tl.store(mean_ptr + c, mean, mask=cm)
        tl.store(invstd_ptr + c, invstd, mask=cm)
        tl.store(var_ptr + c, M2 / (count - 1.0), mask=cm)
    else:
        invstd = tl.load(invstd_ptr + c, mask=cm, other=0.0)
    gamma = tl.load(gamma_ptr + c, mask=cm, other=0.0).to(ACC)
    w = tl.abs(gamma) / _abs_sum(gamma_ptr, C, ACC, BLOCK_C)
    tl.store(coefs_ptr + c * 2, invstd * gamma * w, mask=cm)
    tl.store(coefs_ptr + c * 2 + 1, tl.load(beta_ptr + c, mask=cm, other=0.0).to(ACC) * w,
             mask=cm)


@triton.jit
def _grad_sums_kernel(x_ptr, dy_ptr, mean_ptr, coefs_ptr, s1_ptr, s2_ptr, C, HW, stride_c,
                      stride_p, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_P: tl.constexpr):
    """Per (n, c): S1 = sum g, S2 = sum g (x - mean), g = dy x s (1 - s)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = b * C * HW
    mu = tl.load(mean_ptr + c, mask=cmask, other=0.0)[:, None]
    a = tl.load(coefs_ptr + c * 2, mask=cmask, other=0.0)[:, None]
    bb = tl.load(coefs_ptr + c * 2 + 1, mask=cmask, other=0.0)[:, None]
    t1 = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    t2 = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    for p0 in range(0, HW, BLOCK_P):
        v, m, offs = load_tile(x_ptr, base, c, cmask, p0, HW, stride_c, stride_p, ACC, BLOCK_P)
        d = tl.load(dy_ptr + offs, mask=m, other=0.0).to(ACC)
        s = sigmoid((v - mu) * a + bb)
        g = tl.where(m, d * v * s * (1.0 - s), 0.0)
        t1 += g
        t2 += g * (v - mu)
    tl.store(s1_ptr + b * C + c, tl.sum(t1, axis=1), mask=cmask)
    tl.store(s2_ptr + b * C + c, tl.sum(t2, axis=1), mask=cmask)


@triton.jit
def _grad_fold_kernel(s1_ptr, s2_ptr, invstd_ptr, gamma_ptr, coefs_ptr, dgamma_ptr, dbeta_ptr,
                      N, C, HW, BATCH: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """S1, S2 summed over the samples in order: dgamma = w invstd S2,
    dbeta = w S1 and, with batch statistics, k2 = a invstd^2 S2 / M,
    k3 = a S1 / M of dx = dy s + a g - k2 (x - mean) - k3 (into coefs[:, 2:4])."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    S1 = tl.zeros([BLOCK_C], ACC)
    S2 = tl.zeros([BLOCK_C], ACC)
    for n in range(0, N):
        S1 += tl.load(s1_ptr + n * C + c, mask=cm, other=0.0)
        S2 += tl.load(s2_ptr + n * C + c, mask=cm, other=0.0)
    invstd = tl.load(invstd_ptr + c, mask=cm, other=0.0)
    gamma = tl.load(gamma_ptr + c, mask=cm, other=0.0).to(ACC)
    w = tl.abs(gamma) / _abs_sum(gamma_ptr, C, ACC, BLOCK_C)
    tl.store(dgamma_ptr + c, w * invstd * S2, mask=cm)
    tl.store(dbeta_ptr + c, w * S1, mask=cm)
    a = tl.load(coefs_ptr + c * 2, mask=cm, other=0.0)
    count = (N * HW).to(ACC)
    if BATCH:
        k2 = a * invstd * invstd * S2 / count
        k3 = a * S1 / count
    else:
        k2 = tl.zeros([BLOCK_C], ACC)
        k3 = tl.zeros([BLOCK_C], ACC)
    tl.store(coefs_ptr + 2 * C + c * 2, k2, mask=cm)
    tl.store(coefs_ptr + 2 * C + c * 2 + 1, k3, mask=cm)


@triton.jit
def _apply_kernel(x_ptr, dy_ptr, mean_ptr, coefs_ptr, out_ptr, N, C, H, W, GRAD: tl.constexpr,
                  CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Forward: y = x s, s = sigmoid((x - mean) a + b). Backward (GRAD):
    dx = dy s + a g - k2 (x - mean) - k3, g = dy x s (1 - s)."""
    e, em, n, c, _, _ = element_block(N, C, H, W, CHANNELS_LAST, BLOCK)
    v = tl.load(x_ptr + e, mask=em, other=0.0).to(ACC)
    dev = v - tl.load(mean_ptr + c, mask=em, other=0.0)
    a = tl.load(coefs_ptr + c * 2, mask=em, other=0.0)
    s = sigmoid(dev * a + tl.load(coefs_ptr + c * 2 + 1, mask=em, other=0.0))
    if GRAD:
        d = tl.load(dy_ptr + e, mask=em, other=0.0).to(ACC)
        k2 = tl.load(coefs_ptr + 2 * C + c * 2, mask=em, other=0.0)
        k3 = tl.load(coefs_ptr + 2 * C + c * 2 + 1, mask=em, other=0.0)
        r = d * s + a * (d * v * s * (1.0 - s)) - k2 * dev - k3
    else:
        r = v * s
    tl.store(out_ptr + e, r.to(out_ptr.dtype.element_ty), mask=em)


# ---------------------------------------------------------------- launchers

_APPLY_BLOCK = 512


def _apply(x, dy, mean, coefs, out, grad: bool):
    B, C, H, W = x.shape
    N = x.numel()
    _apply_kernel[(triton.cdiv(N, _APPLY_BLOCK),)](
        x, x if dy is None else dy, mean, coefs, out, N, C, H, W, GRAD=grad,
        CHANNELS_LAST=channels_last(x), ACC=acc_dtype(x)[1], BLOCK=_APPLY_BLOCK)


def _nam_forward(x, weight, bias, running_mean: Optional[torch.Tensor],
                 running_var: Optional[torch.Tensor], eps: float):
    if (running_mean is None) != (running_var is None):
        raise ValueError("give both running_mean and running_var, or neither")
    acc, tl_acc = acc_dtype(x)
    B, C, H, W = x.shape
    batch = running_mean is None
    y = torch.empty_like(x)
    var = torch.empty((C if batch else 0,), device=x.device, dtype=acc)
    if batch:
        mean = torch.empty((C,), device=x.device, dtype=acc)
        invstd = torch.empty_like(mean)
        if x.numel() == 0:
            for t in (mean, invstd, var):
                t.fill_(float("nan"))
            return y, mean, invstd, var
    else:
        mean = running_mean.to(acc, copy=True)
        invstd = (running_var.to(acc) + eps).rsqrt()
        if x.numel() == 0:
            return y, mean, invstd, var
    coefs = torch.empty((2, C, 2), device=x.device, dtype=acc)  # (a, b), then the backward's
    m = m2 = mean  # unread without batch statistics
    if batch:
        m = torch.empty((B, C), device=x.device, dtype=acc)
        m2 = torch.empty_like(m)
        stride_c, stride_p = layout(x)
        block_c, block_p = plane_blocks(x)
        _stats_kernel[(B, triton.cdiv(C, block_c))](x, m, m2, C, H * W, stride_c, stride_p,
                                                    ACC=tl_acc, BLOCK_C=block_c, BLOCK_P=block_p)
    eps_t = torch.full((1,), eps, device=x.device, dtype=acc)  # exact for fp64 too
    _fold_kernel[(triton.cdiv(C, _CHANNEL_BLOCK),)](
        m, m2, eps_t, weight, bias, mean, invstd, var if batch else mean, coefs, B, C, H * W,
        BATCH=batch, ACC=tl_acc, BLOCK_C=_CHANNEL_BLOCK)
    _apply(x, None, mean, coefs, y, False)
    return y, mean, invstd, var


def _nam_backward(dy, x, weight, bias, mean, invstd, batch: bool):
    acc, tl_acc = acc_dtype(x)
    B, C, H, W = x.shape
    dx = torch.empty_like(x)
    dgamma = torch.zeros((C,), device=x.device, dtype=acc)
    dbeta = torch.zeros_like(dgamma)
    if x.numel() != 0:
        coefs = torch.empty((2, C, 2), device=x.device, dtype=acc)
        _fold_kernel[(triton.cdiv(C, _CHANNEL_BLOCK),)](
            mean, mean, mean, weight, bias, mean, invstd, mean, coefs, B, C, H * W,
            BATCH=False, ACC=tl_acc, BLOCK_C=_CHANNEL_BLOCK)
        s1 = torch.empty((B, C), device=x.device, dtype=acc)
        s2 = torch.empty_like(s1)
        stride_c, stride_p = layout(x)
        block_c, block_p = plane_blocks(x)
        _grad_sums_kernel[(B, triton.cdiv(C, block_c))](
            x, dy, mean, coefs, s1, s2, C, H * W, stride_c, stride_p, ACC=tl_acc,
            BLOCK_C=block_c, BLOCK_P=block_p)
        _grad_fold_kernel[(triton.cdiv(C, _CHANNEL_BLOCK),)](
            s1, s2, invstd, weight, coefs, dgamma, dbeta, B, C, H * W, BATCH=batch, ACC=tl_acc,
            BLOCK_C=_CHANNEL_BLOCK)
        _apply(x, dy, mean, coefs, dx, True)
    return dx, dgamma.to(weight.dtype), dbeta.to(bias.dtype)


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::nam_forward_triton", mutates_args=())
def nam_forward_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
                       eps: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _nam_forward(x, weight, bias, running_mean, running_var, eps)


@torch.library.custom_op("attnkernels::nam_backward_triton", mutates_args=())
def nam_backward_triton(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                        batch: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _nam_backward(dy, x, weight, bias, mean, invstd, batch)


register_forward_backward("nam", nam_ops.forward_fake, nam_ops.backward_fake,
                          nam_ops.make_autograd, backend="triton")
