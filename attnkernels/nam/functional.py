"""NAM's channel attention as a function: validates its arguments and picks the backend."""
from typing import List, Optional

import torch
from torch.nn import functional as torch_F

from .._core import backend as _backend
from .._core.functional import BatchNormCall, check_activation_4d, check_batch_norm, check_param
from .._core.ops import call_forward
from . import reference

__all__ = ["nam_channel_attention"]


def nam_channel_attention(x: torch.Tensor, bn_weight: torch.Tensor, bn_bias: torch.Tensor,
                          running_mean: Optional[torch.Tensor] = None,
                          running_var: Optional[torch.Tensor] = None, training: bool = False,
                          momentum: float = 0.1, eps: float = 1e-5, *, bn: bool = True,
                          backend: Optional[str] = None,
                          family_reasons: List[str] = ()) -> torch.Tensor:
    """NAM's channel attention: ``x * sigmoid(w * batch_norm(x))`` with
    ``w = |bn_weight| / sum |bn_weight|`` taken without gradient (as upstream,
    which reads the BatchNorm's ``weight.data``).

    x: (N, C, H, W), NCHW or channels_last. The BatchNorm's arguments are
    F.batch_norm's: the batch's statistics over (N, H, W) when ``training``
    or without running statistics, else the running ones; in training mode
    the running statistics are updated as F.batch_norm does. backend: as for
    ``squeeze_excite``.

    Passes over x: forward, with batch statistics one statistics read and
    one apply read and write, with running statistics the apply alone;
    backward, one read of (dy, x) for two per-channel sums and one read of
    (dy, x) and write of dx. Saved for backward: x and two (C,) statistics."""
    check_activation_4d(x)
    if not bn:
        raise ValueError("NAM's channel attention is a BatchNorm's: bn must be True")
    channels = x.shape[1]
    for name, t in (("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if t is None:
            raise ValueError(f"{name} is None: NAM weighs channels by an affine BatchNorm's scales")
        check_param(x, t, name, (channels,))
    check_batch_norm(x, bn, channels, running_mean=running_mean, running_var=running_var)
    norm = BatchNormCall(True, training, running_mean, running_var, momentum)
    if training:  # as F.batch_norm: more than one value per channel
        torch_F._verify_batch_size(x.size())

    name = _backend.select(x, backend, family_reasons)
    if name == "reference":
        return reference.nam_channel_attention(x, bn_weight, bn_bias, running_mean, running_var,
                                               training, momentum, eps)
    if name == "triton":
        from . import triton as _  # noqa: F401  (registers the *_triton ops)

        op = torch.ops.attnkernels.nam_forward_triton
    else:
        op = torch.ops.attnkernels.nam_forward
    y, mean, _invstd, var = call_forward(op, (x, bn_weight, bn_bias), *norm.op_running,
                                         float(eps))
    if norm.updates:
        norm.after(x, mean.to(running_mean.dtype), var.to(running_var.dtype))
    return y
