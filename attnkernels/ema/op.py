"""EMA operators: fake implementations and autograd.

``attnkernels::ema_forward(x, x2, w1, b1, gn_w, gn_b, groups, eps)`` returns
(y, strips, gates, stats, s): y and what the backward reads besides x and x2,
all small ((B*G, g, H+W), (B*G, 4, g) and the (B*G, H, W) map s, in the
accumulate dtype). ``attnkernels::ema_backward`` returns (dx, dx2, dw1, db1,
dgn_w, dgn_b), the parameter gradients in the accumulate dtype (cast here to
each parameter's). dx2 flows on into the 3x3 convolution's backward (autograd).
"""
import torch

from .._core.ops import (like_x, only_y_differentiable, register_forward_backward, stats_dtype,
                        y_backward)


def forward_fake(x, x2, w1, b1, gn_w, gn_b, groups, eps):
    B, C, H, W = x.shape
    n, g, acc = B * groups, C // groups, stats_dtype(x)
    return (torch.empty_like(x), x.new_empty((n, g, H + W), dtype=acc),
            x.new_empty((n, g, H + W), dtype=acc), x.new_empty((n, 4, g), dtype=acc),
            x.new_empty((n, H, W), dtype=acc))


def backward_fake(dy, x, x2, w1, gn_w, gn_b, strips, gates, stats, s, groups):
    g, acc = x.shape[1] // groups, stats_dtype(x)
    vector = x.new_empty((g,), dtype=acc)
    return (torch.empty_like(x), torch.empty_like(x2), w1.new_empty(w1.shape, dtype=acc),
            vector, torch.empty_like(vector), torch.empty_like(vector))


def _cast(grad, param):
    return None if param is None else grad.to(param.dtype)


def make_autograd(backward_op):
    """(setup_context, backward) for an ema_forward-schema op whose backward is ``backward_op``."""

    def setup_context(ctx, inputs, output):
        x, x2, w1, b1, gn_w, gn_b, groups, _eps = inputs
        only_y_differentiable(ctx, output)
        ctx.save_for_backward(x, x2, w1, b1, gn_w, gn_b, *output[1:])
        ctx.groups = groups

    @y_backward
    def backward(ctx, dy, *_saved):
        x, x2, w1, b1, gn_w, gn_b, strips, gates, stats, s = ctx.saved_tensors
        dx, dx2, dw1, db1, dgw, dgb = backward_op(like_x(dy, x), x, x2, w1, gn_w, gn_b, strips,
                                                  gates, stats, s, ctx.groups)
        return (dx, dx2, dw1.to(w1.dtype), _cast(db1, b1), _cast(dgw, gn_w), _cast(dgb, gn_b),
                None, None)

    return setup_context, backward


def register(suffix: str = "") -> None:
    """Fake kernels and autograd for the compiled EMA ops (once the extension is
    loaded) or, with suffix="_triton", their Triton twins."""
    register_forward_backward("ema", forward_fake, backward_fake, make_autograd,
                              backend="triton" if suffix else "native")
