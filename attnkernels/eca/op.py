"""Efficient Channel Attention operators: fake implementations and autograd.

The compiled ``attnkernels::eca_forward`` returns (y, pooled); its backward op
returns dx and dz, the per-sample gradient of the gate's pre-activation. The
conv weight and bias gradients are batch-wide sums formed here from dz and the
pooled means (deterministic), for every backend alike.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .._core.ops import (call_forward, like_x, only_y_differentiable, register_forward_backward,
                        stats_dtype, y_backward)
from .._core.gate_matmul import matmul, sum_all


def forward_fake(x, weight, bias, circular, gate):
    return torch.empty_like(x), x.new_empty((x.shape[0], x.shape[1]), dtype=stats_dtype(x))


def backward_fake(dy, x, pooled, weight, bias, circular, gate):
    return torch.empty_like(x), x.new_empty((x.shape[0], x.shape[1]), dtype=stats_dtype(x))


def padded(pooled: torch.Tensor, k: int, circular: bool) -> torch.Tensor:
    """The pooled means (B, C) padded for a k-tap conv over channels: (B, C + k - 1)."""
    pad = (k - 1) // 2
    return F.pad(pooled[:, None], (pad, pad), mode="circular" if circular else "constant")[:, 0]


def weight_grads(needs, pooled, dz, weight, bias, circular: bool):
    """Gradients of the conv weight (k,) and bias (1,): dw[j] = sum_bc dz[b, c] s_pad[b, c + j]."""
    dw = db = None
    if needs[0]:
        k = weight.shape[0]
        windows = padded(pooled, k, circular).unfold(1, k, 1)  # (B, C, k)
        # one long dot product per tap (B * C terms): in float64
        dw = matmul(dz.reshape(1, -1).double(), windows.reshape(-1, k).double())[0]
        dw = dw.to(weight.dtype)
    if needs[1] and bias is not None:
        db = sum_all(dz).reshape(1).to(bias.dtype)
    return dw, db


def make_autograd(backward_op):
    """(setup_context, backward) for an eca_forward-schema op whose backward is ``backward_op``."""

    def setup_context(ctx, inputs, output):
        x, weight, bias, circular, gate = inputs
        only_y_differentiable(ctx, output)
        ctx.save_for_backward(x, weight, bias, output[1])
        ctx.params = (circular, gate)

    @y_backward
    def backward(ctx, dy, _dpooled):
        x, weight, bias, pooled = ctx.saved_tensors
        circular, gate = ctx.params
        dx, dz = backward_op(like_x(dy, x), x, pooled, weight, bias, circular, gate)
        needs = ctx.needs_input_grad
        dw, db = weight_grads(needs[1:3], pooled, dz, weight, bias, circular)
        return (dx if needs[0] else None), dw, db, None, None

    return setup_context, backward


def register() -> None:
    """Fake kernels and autograd for the compiled ECA ops (once the extension is loaded)."""
    register_forward_backward("eca", forward_fake, backward_fake, make_autograd)


def eca_forward(x, weight, bias: Optional[torch.Tensor], circular: bool, gate: int) -> torch.Tensor:
    return call_forward(torch.ops.attnkernels.eca_forward, (x, weight, bias), circular, gate)[0]
