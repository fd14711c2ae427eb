"""SimAM operators: fake implementations and autograd.

The compiled ``attnkernels::simam_forward`` returns (y, mean, denom): the
per-(n, c) mean over H*W and denom = 4 (sum_hw (x - mean)^2 / (H*W - 1) +
e_lambda), all that the backward reads besides x and dy (no full-size
intermediate is kept). ``attnkernels::simam_backward`` returns dx.
"""
import torch

from .._core.ops import (call_forward, like_x, only_y_differentiable, register_forward_backward,
                        stats_dtype, y_backward)


def forward_fake(x, e_lambda):
    stats = x.new_empty((x.shape[0], x.shape[1]), dtype=stats_dtype(x))
    return torch.empty_like(x), stats, torch.empty_like(stats)


def backward_fake(dy, x, mean, denom):
    return torch.empty_like(x)


def make_autograd(backward_op):
    """(setup_context, backward) for a simam_forward-schema op whose backward is ``backward_op``."""

    def setup_context(ctx, inputs, output):
        x, _e_lambda = inputs
        only_y_differentiable(ctx, output)
        ctx.save_for_backward(x, output[1], output[2])

    @y_backward
    def backward(ctx, dy, _dmean, _ddenom):
        x, mean, denom = ctx.saved_tensors
        return backward_op(like_x(dy, x), x, mean, denom), None

    return setup_context, backward


def register() -> None:
    """Fake kernels and autograd for the compiled SimAM ops (once the extension is loaded)."""
    register_forward_backward("simam", forward_fake, backward_fake, make_autograd)


def simam_forward(x, e_lambda: float) -> torch.Tensor:
    return call_forward(torch.ops.attnkernels.simam_forward, (x,), e_lambda)[0]
