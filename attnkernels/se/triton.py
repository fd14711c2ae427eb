"""Squeeze-and-Excitation in Triton: kernels, launchers, op registration.

Forward: pool (one read of x) -> per-sample gate network -> apply (read x,
write y): three launches. Backward: reduce sum(dy * x) -> per-sample gate
backward -> apply (read dy, x, write dx): three launches; the weight gradients
are formed in attnkernels/ops/se.py, shared with the C++ backends.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import op as se_ops
from .._core.ops import call_forward, register_forward_backward
from .._core import channel_gate_triton as _channel_gate
from .._core.triton import (acc_dtype, activation_forward, activation_grad, gate_forward,
                            store_gate_and_grad)


@triton.jit
def _matvec(w_ptr, v_row, out_idx, out_mask, nk, stride_out, stride_k, ACC: tl.constexpr,
            BLOCK_K: tl.constexpr):
    """out[i] = sum_k W[i * stride_out + k * stride_k] v[k] for one sample: W v
    (stride_out = ncols, stride_k = 1) or W^T v (stride_out = 1, stride_k = ncols)."""
    out = tl.zeros(out_idx.shape, ACC)
    for k0 in range(0, nk, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        km = k < nk
        v = tl.load(v_row + k, mask=km, other=0.0)
        w = tl.load(w_ptr + out_idx[:, None] * stride_out + k[None, :] * stride_k,
                    mask=out_mask[:, None] & km[None, :], other=0.0)
        out += tl.sum(w * v[None, :], axis=1)
    return out


@triton.jit
def _matvec_rows(w_ptr, b_ptr, s_row, rows, rmask, ncols, HAS_B: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_K: tl.constexpr):
    """out[rows] = W[rows, :] s + b[rows] for one sample; W is (*, ncols) row-major."""
    out = _matvec(w_ptr, s_row, rows, rmask, ncols, ncols, 1, ACC, BLOCK_K)
    if HAS_B:
        out += tl.load(b_ptr + rows, mask=rmask, other=0.0)
    return out


@triton.jit
def _matvec_cols(w_ptr, v_row, cols, cmask, nrows, ncols, ACC: tl.constexpr,
                 BLOCK_K: tl.constexpr):
    """out[cols] = W[:, cols]^T v for one sample; W is (nrows, ncols) row-major."""
    return _matvec(w_ptr, v_row, cols, cmask, nrows, 1, ncols, ACC, BLOCK_K)


@triton.jit
def _hidden(s_row, w1_ptr, b1_ptr, h_row, a_row, C, R, HAS_B1: tl.constexpr, ACT: tl.constexpr,
            ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
            STORE_H: tl.constexpr):
    """a = act(h), h = W1 s + b1, of one sample into the row a_row (and h into
    h_row with STORE_H), BLOCK_R hidden units at a time."""
    for r0 in range(0, R, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        rm = r < R
        h = _matvec_rows(w1_ptr, b1_ptr, s_row, r, rm, C, HAS_B1, ACC, BLOCK_C)
        if STORE_H:
            tl.store(h_row + r, h, mask=rm)
        tl.store(a_row + r, activation_forward(h, ACT), mask=rm)
    tl.debug_barrier()  # every hidden unit is read back by every channel below


@triton.jit
def _last_layer(v_row, w_ptr, b_ptr, K, HAS_B: tl.constexpr, dg_ptr, g_ptr, dz_ptr, row, C,
                GATE: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                BLOCK_K: tl.constexpr, BACKWARD: tl.constexpr):
    """The gate network's last layer for one sample, BLOCK_C channels at a time:
    z = W v + b (W: (C, K)), g = gate(z) into g_ptr + row, and with BACKWARD
    dz = dg * gate'(z) into dz_ptr + row (the forward passes g_ptr for dg_ptr and
    dz_ptr, unread)."""
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = c < C
        z = _matvec_rows(w_ptr, b_ptr, v_row, c, cm, K, HAS_B, ACC, BLOCK_K)
        if BACKWARD:
            store_gate_and_grad(z, dg_ptr, g_ptr, dz_ptr, row + c, cm, GATE)
        else:
            tl.store(g_ptr + row + c, gate_forward(z, GATE), mask=cm)


@triton.jit
def _se_gate_kernel(s_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, g_ptr, a_ptr, C, R,
                    HAS_B1: tl.constexpr, HAS_B2: tl.constexpr, TWO_LAYER: tl.constexpr,
                    ACT: tl.constexpr, GATE: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """g = gate(W2 act(W1 s + b1) + b2) for one sample per program; a_ptr: a
    (B, R) scratch for act(W1 s + b1), so that R is tiled too."""
    b = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + b * C
    if TWO_LAYER:
        a_row = a_ptr + b * R
        _hidden(s_row, w1_ptr, b1_ptr, a_row, a_row, C, R, HAS_B1, ACT, ACC, BLOCK_R, BLOCK_C,
                False)
        _last_layer(a_row, w2_ptr, b2_ptr, R, HAS_B2, g_ptr, g_ptr, g_ptr, b * C, C, GATE, ACC,
                    BLOCK_C, BLOCK_R, False)
    else:
        _last_layer(s_row, w1_ptr, b1_ptr, C, HAS_B1, g_ptr, g_ptr, g_ptr, b * C, C, GATE, ACC,
                    BLOCK_C, BLOCK_R, False)


@triton.jit
def _pool_grads(w1_ptr, v_row, K, row, C, cnt_ptr, dmean_ptr, dmax_ptr, HW,
                HAS_MAX: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr,
                BLOCK_K: tl.constexpr):
    """ds = W1^T v (W1: (K, C)) for one sample, BLOCK_C channels at a time, as
    the gradients the apply pass spreads over H*W: dmean, and dmax per tied
    maximum."""
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = c < C
        ds = _matvec_cols(w1_ptr, v_row, c, cm, K, C, ACC, BLOCK_K)
        # / HW, not * (1 / HW) passed in: a float argument is an fp32 scalar on a GPU
        if HAS_MAX:
            tl.store(dmean_ptr + row + c, 0.5 * ds / HW, mask=cm)
            cnt = tl.load(cnt_ptr + row + c, mask=cm, other=1.0)
            tl.store(dmax_ptr + row + c, 0.5 * ds / cnt, mask=cm)
        else:
            tl.store(dmean_ptr + row + c, ds / HW, mask=cm)


@triton.jit
def _se_gate_backward_kernel(s_ptr, dg_ptr, cnt_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, g_ptr,
                             dz_ptr, dh_ptr, h_ptr, a_ptr, dmean_ptr, dmax_ptr, C, R, HW,
                             HAS_MAX: tl.constexpr, HAS_B1: tl.constexpr, HAS_B2: tl.constexpr,
                             TWO_LAYER: tl.constexpr, ACT: tl.constexpr, GATE: tl.constexpr,
                             ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per sample: recompute the gate network, then g, dz, dh and the gradients
    that the apply pass spreads over H*W (dmean, and dmax per tied maximum);
    h_ptr, a_ptr: (B, R) scratch rows for W1 s + b1 and its activation, so
    that R is tiled too."""
    b = tl.program_id(0).to(tl.int64)
    row = b * C
    s_row = s_ptr + row
    if TWO_LAYER:
        h_row, a_row = h_ptr + b * R, a_ptr + b * R
        _hidden(s_row, w1_ptr, b1_ptr, h_row, a_row, C, R, HAS_B1, ACT, ACC, BLOCK_R, BLOCK_C,
                True)
        _last_layer(a_row, w2_ptr, b2_ptr, R, HAS_B2, dg_ptr, g_ptr, dz_ptr, row, C, GATE, ACC,
                    BLOCK_C, BLOCK_R, True)
        tl.debug_barrier()  # dz of every channel is read back below
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            rm = r < R
            da = _matvec_cols(w2_ptr, dz_ptr + row, r, rm, C, R, ACC, BLOCK_C)  # W2^T dz
            h = tl.load(h_row + r, mask=rm, other=0.0)
            tl.store(dh_ptr + b * R + r, tl.where(rm, da * activation_grad(h, ACT), 0.0), mask=rm)
        tl.debug_barrier()  # dh of every hidden unit is read back below
        _pool_grads(w1_ptr, dh_ptr + b * R, R, row, C, cnt_ptr, dmean_ptr, dmax_ptr, HW, HAS_MAX,
                    ACC, BLOCK_C, BLOCK_R)  # ds = W1^T dh
    else:
        _last_layer(s_row, w1_ptr, b1_ptr, C, HAS_B1, dg_ptr, g_ptr, dz_ptr, row, C, GATE, ACC,
                    BLOCK_C, BLOCK_R, True)
        tl.debug_barrier()  # dz of every channel is read back below
        _pool_grads(w1_ptr, dz_ptr + row, C, row, C, cnt_ptr, dmean_ptr, dmax_ptr, HW, HAS_MAX,
                    ACC, BLOCK_C, BLOCK_R)  # ds = W1^T dz


# ---------------------------------------------------------------- launchers

def _gate_blocks(C: int, R: int):
    block_r = triton.next_power_of_2(max(R, 1)) if R <= 1024 else 128
    return min(block_r, 1024), max(16, min(64, 8192 // max(block_r, 1)))


def _weights(acc, w1, b1, w2, b2):
    prep = lambda t: None if t is None else t.to(acc).contiguous()  # noqa: E731  (small tensors)
    return prep(w1), prep(b1), prep(w2), prep(b2)


def _se_forward(x, w1, b1, w2, b2, pool, act, gate):
    acc, tl_acc = acc_dtype(x)
    B, C = x.shape[:2]
    y = torch.empty_like(x)
    pooled = torch.empty((B, C), device=x.device, dtype=acc)
    xmax = torch.empty((B if pool == 1 else 0, C), device=x.device, dtype=acc)
    if x.numel() == 0:
        pooled.fill_(float("nan"))
        xmax.fill_(float("nan"))
        return y, pooled, xmax
    w1, b1, w2, b2 = _weights(acc, w1, b1, w2, b2)
    _channel_gate.pool(x, pooled, xmax, pool == 1)
    g = torch.empty((B, C), device=x.device, dtype=acc)
    R = w1.shape[0]
    block_r, block_gc = _gate_blocks(C, R)
    hidden = torch.empty((B if w2 is not None else 0, R), device=x.device, dtype=acc)
    _se_gate_kernel[(B,)](
        pooled, w1, b1 if b1 is not None else w1, w2 if w2 is not None else w1,
        b2 if b2 is not None else w1, g, hidden if w2 is not None else g, C, R, HAS_B1=b1 is not None, HAS_B2=b2 is not None,
        TWO_LAYER=w2 is not None, ACT=act, GATE=gate, ACC=tl_acc, BLOCK_R=block_r,
        BLOCK_C=block_gc)
    _channel_gate.apply(x, g, y)
    return y, pooled, xmax


def _se_backward(dy, x, pooled, xmax, w1, b1, w2, b2, pool, act, gate):
    acc, tl_acc = acc_dtype(x)
    B, C, H, W = x.shape
    HW = H * W
    R = w1.shape[0]
    dx = torch.empty_like(x)
    dz = torch.zeros((B, C), device=x.device, dtype=acc)
    dh = torch.zeros((B if w2 is not None else 0, R), device=x.device, dtype=acc)
    if x.numel() == 0:
        return dx, dz, dh
    w1, b1, w2, b2 = _weights(acc, w1, b1, w2, b2)
    has_max = pool == 1
    dg = torch.empty((B, C), device=x.device, dtype=acc)
    count = torch.empty((B, C), device=x.device, dtype=acc) if has_max else dg
    _channel_gate.reduce_grad(dy, x, xmax, dg, count, has_max)
    g = torch.empty((B, C), device=x.device, dtype=acc)
    dmean = torch.empty((B, C), device=x.device, dtype=acc)
    dmax = torch.empty((B, C), device=x.device, dtype=acc) if has_max else dmean
    block_r, block_gc = _gate_blocks(C, R)
    hidden = torch.empty((2, B if w2 is not None else 0, R), device=x.device, dtype=acc)
    _se_gate_backward_kernel[(B,)](
        pooled, dg, count, w1, b1 if b1 is not None else w1, w2 if w2 is not None else w1,
        b2 if b2 is not None else w1, g, dz, *((dh, hidden[0], hidden[1]) if w2 is not None
                                              else (dz, dz, dz)), dmean, dmax, C, R,
        HW, HAS_MAX=has_max, HAS_B1=b1 is not None,
        HAS_B2=b2 is not None, TWO_LAYER=w2 is not None, ACT=act, GATE=gate, ACC=tl_acc,
        BLOCK_R=block_r, BLOCK_C=block_gc)
    _channel_gate.apply_grad(dy, x, g, dmean, xmax, dmax, dx, has_max)
    return dx, dz, dh


# ---------------------------------------------------------------- ops

@torch.library.custom_op("attnkernels::se_forward_triton", mutates_args=())
def se_forward_triton(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                      w2: Optional[torch.Tensor], b2: Optional[torch.Tensor], pool: int, act: int,
                      gate: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _se_forward(x, w1, b1, w2, b2, pool, act, gate)


@torch.library.custom_op("attnkernels::se_backward_triton", mutates_args=())
def se_backward_triton(dy: torch.Tensor, x: torch.Tensor, pooled: torch.Tensor,
                       xmax: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                       w2: Optional[torch.Tensor], b2: Optional[torch.Tensor], pool: int,
                       act: int, gate: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _se_backward(dy, x, pooled, xmax, w1, b1, w2, b2, pool, act, gate)


register_forward_backward("se", se_ops.forward_fake, se_ops.backward_fake,
                          se_ops.make_autograd, backend="triton")


def se_forward(x, w1, b1, w2, b2, pool: int, act: int, gate: int) -> torch.Tensor:
    return call_forward(torch.ops.attnkernels.se_forward_triton, (x, w1, b1, w2, b2),
                        pool, act, gate)[0]
