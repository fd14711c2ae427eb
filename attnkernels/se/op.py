"""Squeeze-and-Excitation operators: fake implementations and autograd.

The compiled ``attnkernels::se_forward`` returns (y, pooled, xmax); its
backward op returns dx and the per-sample gradients of the gate network's
pre-activations (dz, dh). The weight gradients are batch-wide sums, formed
here with small matmuls (ops/gate_matmul.py: on the CPU bitwise independent
of the thread count), for every backend alike.
"""
from typing import Optional

import torch

from .._core.layers import activation
from .._core.ops import (call_forward, like_x, only_y_differentiable, register_forward_backward,
                        stats_dtype, y_backward)
from .._core.gate_matmul import linear, matmul

ACT_NAMES = {0: "identity", 1: "relu", 2: "silu", 3: "hardswish"}


def forward_fake(x, w1, b1, w2, b2, pool, act, gate):
    batch, channels = x.shape[0], x.shape[1]
    acc = stats_dtype(x)
    return (torch.empty_like(x), x.new_empty((batch, channels), dtype=acc),
            x.new_empty((batch if pool == 1 else 0, channels), dtype=acc))


def backward_fake(dy, x, pooled, xmax, w1, b1, w2, b2, pool, act, gate):
    batch, channels = x.shape[0], x.shape[1]
    acc = stats_dtype(x)
    return (torch.empty_like(x), x.new_empty((batch, channels), dtype=acc),
            x.new_empty((batch if w2 is not None else 0, w1.shape[0]), dtype=acc))


def weight_grads(needs, pooled, dz, dh, w1, b1, w2, b2, act: int):
    """Gradients of (w1, b1, w2, b2) from the per-sample dz (B, C) and dh (B, R)."""
    dw1 = db1 = dw2 = db2 = None
    acc = pooled.dtype
    if w2 is None:
        if needs[0]:
            dw1 = matmul(dz.t(), pooled).to(w1.dtype)
        if needs[1] and b1 is not None:
            db1 = dz.sum(0).to(b1.dtype)
        return dw1, db1, dw2, db2
    if needs[2]:
        h = linear(pooled, w1.to(acc), None if b1 is None else b1.to(acc))
        dw2 = matmul(dz.t(), activation(h, ACT_NAMES[act])).to(w2.dtype)
    if needs[3] and b2 is not None:
        db2 = dz.sum(0).to(b2.dtype)
    if needs[0]:
        dw1 = matmul(dh.t(), pooled).to(w1.dtype)
    if needs[1] and b1 is not None:
        db1 = dh.sum(0).to(b1.dtype)
    return dw1, db1, dw2, db2


def make_autograd(backward_op):
    """(setup_context, backward) for a se_forward-schema op whose backward is ``backward_op``."""

    def setup_context(ctx, inputs, output):
        x, w1, b1, w2, b2, pool, act, gate = inputs
        _, pooled, xmax = output
        only_y_differentiable(ctx, output)
        ctx.save_for_backward(x, w1, b1, w2, b2, pooled, xmax)
        ctx.params = (pool, act, gate)

    @y_backward
    def backward(ctx, dy, _dpooled, _dxmax):
        x, w1, b1, w2, b2, pooled, xmax = ctx.saved_tensors
        pool, act, gate = ctx.params
        dx, dz, dh = backward_op(like_x(dy, x), x, pooled, xmax, w1, b1, w2, b2, pool, act, gate)
        needs = ctx.needs_input_grad
        dw1, db1, dw2, db2 = weight_grads(needs[1:5], pooled, dz, dh, w1, b1, w2, b2, act)
        return (dx if needs[0] else None), dw1, db1, dw2, db2, None, None, None

    return setup_context, backward


def register() -> None:
    """Fake kernels and autograd for the compiled SE ops (once the extension is loaded)."""
    register_forward_backward("se", forward_fake, backward_fake, make_autograd)


def se_forward(x, w1, b1: Optional[torch.Tensor], w2: Optional[torch.Tensor],
               b2: Optional[torch.Tensor], pool: int, act: int, gate: int) -> torch.Tensor:
    return call_forward(torch.ops.attnkernels.se_forward, (x, w1, b1, w2, b2), pool, act, gate)[0]
