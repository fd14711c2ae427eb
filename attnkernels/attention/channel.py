"""DANet's channel attention (junfu1115/DANet ``CAM_Module``) as one op:
``y = gamma * softmax(max(E) - E) X + x`` with X = x as (B, C, H*W) and
E = X X^T, keeping for backward only what autograd cannot do without: x
(the caller's tensor) and the (B, C, C) attention A. Eager autograd keeps
``A X`` as well (the product gamma multiplies: a (B, C, H*W) tensor, x's
size), and its backward takes four (C x C x H*W) GEMMs where this one takes
three, from

  G = dy X^T,  dgamma = sum(A * G),  dA = gamma G,
  dE' = A (dA - rowsum(dA A))   (the softmax's backward, E' = max(E) - E),
  dx = dy + gamma A^T dy - (dE' + dE'^T) X.

The max's own gradient is left out: it is the row sum of dE', zero in exact
arithmetic (a softmax ignores a per-row shift), a rounding error in eager.
Library GEMMs throughout (no kernel of ours); low-precision inputs are
computed in float32. Two torch.library ops with fake implementations and
registered autograd, so torch.compile sees them whole."""
from typing import Tuple

import torch

__all__ = ["channel_attention"]


def _work(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@torch.library.custom_op("attnkernels::danet_channel_attention", mutates_args=())
def _forward(x: torch.Tensor, gamma: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(y in x's dtype and shape, A (B, C, C) in the working dtype) from x (B, C, N)."""
    xw = x.to(_work(x))
    energy = torch.bmm(xw, xw.transpose(1, 2))
    attention = torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1)
    out = torch.bmm(attention, xw)
    return torch.addcmul(x, gamma.to(x.dtype), out.to(x.dtype)), attention


@_forward.register_fake
def _(x, gamma):
    return torch.empty_like(x), x.new_empty((x.shape[0], x.shape[1], x.shape[1]),
                                           dtype=_work(x))


@torch.library.custom_op("attnkernels::danet_channel_attention_backward", mutates_args=())
def _backward(dy: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor,
              attention: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    work = attention.dtype
    xw, dw = x.to(work), dy.to(work)
    g = gamma.to(work)
    grad = torch.bmm(dw, xw.transpose(1, 2))                       # G = dy X^T
    dgamma = (attention * grad).sum().reshape(gamma.shape)
    d_att = grad.mul_(g)                                            # dA = gamma G
    d_shifted = attention * (d_att - (d_att * attention).sum(-1, keepdim=True))
    d_energy = (d_shifted + d_shifted.transpose(1, 2)).neg_()       # dE + dE^T
    dx = torch.baddbmm(dw, attention.transpose(1, 2) * g, dw)
    dx.baddbmm_(d_energy, xw)
    return dx.to(x.dtype), dgamma.to(gamma.dtype)


@_backward.register_fake
def _(dy, x, gamma, attention):
    return torch.empty_like(x), torch.empty_like(gamma)


def _setup(ctx, inputs, output):
    x, gamma = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, gamma, output[1])


def _grad(ctx, dy, _d_attention):
    if dy is None:
        return None, None
    x, gamma, attention = ctx.saved_tensors
    return _backward(dy.contiguous(), x, gamma, attention)


_forward.register_autograd(_grad, setup_context=_setup)


def channel_attention(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``gamma * softmax(max(E) - E) X + x`` for x (B, C, H, W), X its (B, C,
    H*W) view, E = X X^T (see the module's docstring); gamma a one-element
    tensor."""
    b, c, h, w = x.shape
    y, _ = _forward(x.reshape(b, c, h * w), gamma)
    return y.view(b, c, h, w)
