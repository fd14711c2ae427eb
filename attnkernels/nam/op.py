"""NAM operators: fake implementations and autograd.

The compiled ``attnkernels::nam_forward`` returns (y, mean, invstd, var): the
per-channel mean and 1/sqrt(var + eps) that normalised (the batch's or the
running ones) and the batch's unbiased variance for the running update ((0,)
with running statistics). The backward reads x, dy, the BatchNorm's weight and
bias and those two (C,) statistics: no full-size intermediate is kept.
``attnkernels::nam_backward`` returns (dx, dweight, dbias).
"""
import torch

from .._core.ops import (like_x, only_y_differentiable, register_forward_backward, stats_dtype,
                        y_backward)


def forward_fake(x, weight, bias, running_mean, running_var, eps):
    channels = x.shape[1]
    stats = x.new_empty((channels,), dtype=stats_dtype(x))
    var = x.new_empty((channels if running_mean is None else 0,), dtype=stats_dtype(x))
    return torch.empty_like(x), stats, torch.empty_like(stats), var


def backward_fake(dy, x, weight, bias, mean, invstd, batch):
    return (torch.empty_like(x), weight.new_empty(weight.shape),
            bias.new_empty(bias.shape))


def make_autograd(backward_op):
    """(setup_context, backward) for a nam_forward-schema op whose backward is ``backward_op``."""

    def setup_context(ctx, inputs, output):
        x, weight, bias, running_mean, _running_var, _eps = inputs
        only_y_differentiable(ctx, output)
        ctx.save_for_backward(x, weight, bias, output[1], output[2])
        ctx.batch = running_mean is None

    @y_backward
    def backward(ctx, dy, *_stats):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        dx, dweight, dbias = backward_op(like_x(dy, x), x, weight, bias, mean, invstd, ctx.batch)
        return dx, dweight, dbias, None, None, None

    return setup_context, backward


def register() -> None:
    """Fake kernels and autograd for the compiled NAM ops (once the extension is loaded)."""
    register_forward_backward("nam", forward_fake, backward_fake, make_autograd)
