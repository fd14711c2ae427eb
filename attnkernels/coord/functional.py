"""Coordinate Attention as a function: validates its arguments and picks the backend."""
from typing import List, Optional

import torch

from .._core import backend as _backend
from .._core.functional import (BatchNormCall, check_activation_4d, check_batch_norm,
                                check_first_layer, check_param, cuda_kernel_reasons)
from .._core.layers import ACTIVATIONS, GATES
from .._core.ops import autograd_records, call_forward, composite_forward_op
from . import reference

__all__ = ["coordinate_attention"]


# Read once, at import: no dispatcher lookups inside compiled regions.
_BACKEND_REASONS = cuda_kernel_reasons("coord_apply", "Coordinate Attention")
# Under torch.compile, auto gives Coordinate Attention to inductor as its
# reference decomposition (see se/functional.py; measured on the CoordAtt
# ResNet-50, docs/design.md).
INDUCTOR_FUSES = True


def coordinate_attention(
        x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor], wh: torch.Tensor,
        bh: Optional[torch.Tensor], ww: torch.Tensor, bw: Optional[torch.Tensor], *,
        act: str = "hardswish", gate: str = "sigmoid", bn: bool = False,
        bn_weight: Optional[torch.Tensor] = None, bn_bias: Optional[torch.Tensor] = None,
        running_mean: Optional[torch.Tensor] = None, running_var: Optional[torch.Tensor] = None,
        training: bool = False, momentum: float = 0.1, eps: float = 1e-5, skip: bool = False,
        backend: Optional[str] = None, family_reasons: List[str] = ()) -> torch.Tensor:
    """Coordinate Attention: ``y = x * a_w[n, c, w] * a_h[n, c, h]`` (``+ x`` with skip).

    The strip means (over W per (n, c, h), over H per (n, c, w)) go through a
    shared 1x1 conv w1 (R, C) with bias b1, BatchNorm over both strips (bn),
    and act; then a_h = gate(wh y_h + bh), a_w = gate(ww y_w + bw) with wh, ww
    (C, R). BatchNorm: bn_weight/bn_bias (or None) and running_mean/running_var
    (R,); in training mode (or without running statistics) it normalises with
    the batch statistics and updates the running ones in place with
    ``momentum``, as F.batch_norm does. act: identity/relu/silu/hardswish;
    gate: sigmoid/hard_sigmoid. backend: as for ``squeeze_excite``."""
    check_activation_4d(x)
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    if gate not in GATES:
        raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
    channels = x.shape[1]
    reduced = check_first_layer(x, w1, b1)
    for name, w, b in (("wh", wh, bh), ("ww", ww, bw)):
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
        check_param(x, w, name, (channels, reduced))
        check_param(x, b, "b" + name[1], (channels,))
    check_batch_norm(x, bn, reduced, bn_weight=bn_weight, bn_bias=bn_bias,
                      running_mean=running_mean, running_var=running_var)

    name = _backend.select(x, backend, family_reasons, _BACKEND_REASONS,
                           inductor_fuses=INDUCTOR_FUSES)
    if name == "reference":
        return reference.coordinate_attention(
            x, w1, b1, wh, bh, ww, bw, act=act, gate_fn=gate, bn=bn, bn_weight=bn_weight,
            bn_bias=bn_bias, running_mean=running_mean, running_var=running_var,
            training=training, momentum=momentum, eps=eps, skip=skip)
    norm = BatchNormCall(bn, training, running_mean, running_var, momentum)
    tensors = (x, w1, b1, wh, bh, ww, bw, bn_weight, bn_bias, *norm.op_running)
    config = [ACTIVATIONS[act], GATES[gate], norm.mode, int(skip), int(autograd_records(tensors))]
    y, batch_mean, batch_var, *_saved = call_forward(forward_op(name), tensors, config, eps)
    norm.after(x, batch_mean, batch_var)
    return y


def forward_op(backend: str):
    """The composite forward op of ``backend``: the native one (C++,
    csrc/composite/coord.cpp), or for "triton" the Python one on the Triton passes."""
    if backend == "triton":
        from . import triton  # noqa: F401  (registers it; a plain import, which dynamo traces)
    return composite_forward_op(__package__, backend)
