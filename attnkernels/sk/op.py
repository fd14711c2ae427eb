"""Selective Kernel operators: fake implementations and autograd.

``attnkernels::sk_pool(branches)`` returns s (B, C), the mean over H*W of the
branches' sum; its backward is dS / (H*W) broadcast to every branch, an
expanded view (autograd adds it to each branch's other gradient).
``attnkernels::sk_forward(branches, logits)`` returns
``sum_k softmax_k(logits) * branches[k]``; its backward,
``attnkernels::sk_backward(dy, branches, logits)``, returns each
branch's gradient and the logits' from one read of dy and the branches.
"""
import torch

from .._core.ops import like_x


def pool_fake(branches):
    x = branches[0]
    return x.new_empty((x.shape[0], x.shape[1]))


def select_forward_fake(branches, logits):
    return torch.empty_like(branches[0])


def select_backward_fake(dy, branches, logits):
    return [torch.empty_like(f) for f in branches], torch.empty_like(logits)


def pool_setup_context(ctx, inputs, output):
    (branches,) = inputs
    x = branches[0]
    ctx.shape, ctx.count = tuple(x.shape), len(branches)


def pool_backward(ctx, ds):
    B, C, H, W = ctx.shape
    grad = (ds / (H * W))[:, :, None, None].expand(B, C, H, W)
    return ([grad] * ctx.count,)


def make_select_autograd(backward_op):
    """(setup_context, backward) for an sk_forward-schema op whose
    backward is ``backward_op``."""

    def setup_context(ctx, inputs, output):
        branches, logits = inputs
        ctx.save_for_backward(*branches, logits)

    def backward(ctx, dy):
        *branches, logits = ctx.saved_tensors
        dbranches, dlogits = backward_op(like_x(dy, branches[0]), branches, logits)
        return list(dbranches), dlogits

    return setup_context, backward


def register(suffix: str = "") -> None:
    """Fake kernels and autograd for the compiled Selective Kernel ops (once
    the extension is loaded) or, with suffix="_triton", their Triton twins."""
    ops = torch.ops.attnkernels
    for name, fake in (("sk_pool", pool_fake), ("sk_forward", select_forward_fake),
                       ("sk_backward", select_backward_fake)):
        torch.library.register_fake(f"attnkernels::{name}{suffix}")(fake)
    torch.library.register_autograd(f"attnkernels::sk_pool{suffix}", pool_backward,
                                    setup_context=pool_setup_context)
    setup_context, backward = make_select_autograd(getattr(ops, "sk_backward" + suffix))
    torch.library.register_autograd(f"attnkernels::sk_forward{suffix}", backward,
                                    setup_context=setup_context)
