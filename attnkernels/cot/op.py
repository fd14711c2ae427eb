"""CoT attention's softmax gate operators: fake implementations and autograd.

``attnkernels::cot_forward(att, v, k1)`` returns (y, max, inv_sum): y = k1 +
softmax(att over H*W) * v, with the per-(n, c) max of att and the inverse of
the sum of exp(att - max), all that the backward reads besides att, v and dy
(no softmax output is kept). ``attnkernels::cot_backward`` returns (datt, dv);
k1's gradient is dy itself.
"""
import torch

from .._core.ops import (call_forward, like_x, only_y_differentiable, register_forward_backward,
                        stats_dtype, y_backward)


def forward_fake(att, v, k1):
    stats = att.new_empty((att.shape[0], att.shape[1]), dtype=stats_dtype(att))
    return torch.empty_like(att), stats, torch.empty_like(stats)


def backward_fake(dy, att, v, max, inv_sum):
    return torch.empty_like(att), torch.empty_like(att)


def make_autograd(backward_op):
    """(setup_context, backward) for a cot_forward-schema op whose backward is ``backward_op``."""

    def setup_context(ctx, inputs, output):
        att, v, _k1 = inputs
        only_y_differentiable(ctx, output)
        ctx.save_for_backward(att, v, output[1], output[2])

    @y_backward
    def backward(ctx, dy, _dmax, _dinv_sum):
        att, v, max, inv_sum = ctx.saved_tensors
        datt, dv = backward_op(like_x(dy, att), att, v, max, inv_sum)
        return datt, dv, dy

    return setup_context, backward


def register() -> None:
    """Fake kernels and autograd for the compiled CoT ops (once the extension is loaded)."""
    register_forward_backward("cot", forward_fake, backward_fake, make_autograd)


def cot_forward(att, v, k1) -> torch.Tensor:
    return call_forward(torch.ops.attnkernels.cot_forward, (att, v, k1))[0]
