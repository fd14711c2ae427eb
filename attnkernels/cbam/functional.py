"""CBAM as a function: validates its arguments and picks the backend."""
from typing import List, Optional

import torch

from .._core import backend as _backend
from .._core.functional import (BatchNormCall, check_activation_4d, check_batch_norm, check_mlp,
                                check_param, cuda_kernel_reasons)
from .._core.layers import ACTIVATIONS, GATES
from .._core.ops import call_forward, composite_forward_op
from . import op as cbam_ops
from . import reference

__all__ = ["convolutional_block_attention"]

# Under torch.compile, auto gives CBAM to inductor as its reference
# decomposition (see se/functional.py; measured on whole networks, docs/design.md).
# Training too from torch 2.14 (CBAM ResNet-50's compiled step 1.04x the compiled
# original's given to inductor, 0.89x with our ops, Xeon); before it only where
# autograd records nothing: torch 2.11's backward of the reference recomputes
# x * ca and compares it with the pooled maxima, losing max positions (dx off by
# O(1); our backward reads the forward's gate). 2.12 and 2.13 were not checked.
INDUCTOR_FUSES = True if torch.__version__ >= "2.14" else "without autograd"


# Read once, at import: no dispatcher lookups inside compiled regions.
_BACKEND_REASONS = cuda_kernel_reasons("cbam_apply", "CBAM")


def convolutional_block_attention(
        x: torch.Tensor, w1: Optional[torch.Tensor], b1: Optional[torch.Tensor] = None,
        w2: Optional[torch.Tensor] = None, b2: Optional[torch.Tensor] = None,
        conv_weight: Optional[torch.Tensor] = None, conv_bias: Optional[torch.Tensor] = None, *,
        act: str = "relu", channel_gate: str = "sigmoid", channel_pool: str = "avg_max",
        spatial_input: str = "mean_max", spatial_gate: str = "sigmoid", bn: bool = False,
        bn_weight: Optional[torch.Tensor] = None, bn_bias: Optional[torch.Tensor] = None,
        running_mean: Optional[torch.Tensor] = None, running_var: Optional[torch.Tensor] = None,
        training: bool = False, momentum: float = 0.1, eps: float = 1e-5, first_max: bool = False,
        backend: Optional[str] = None, family_reasons: List[str] = ()) -> torch.Tensor:
    """CBAM: ``u = x * ca[n, c]``, ``y = u * sa[n, h, w]``.

    Channel gate: ``ca = channel_gate(sum over pools of MLP(pool))`` with
    ``MLP(s) = W2 act(W1 s + b1) + b2`` (w1: (R, C), w2: (C, R); w2=None for a
    one-layer MLP, then w1 is (C, C) and act must be "identity"). channel_pool:
    "avg_max" (MLP(mean) + MLP(max)), "mix" (MLP(0.5 mean + 0.5 max)), "avg" or
    "max", over H*W; "none": no channel gate (ca = 1; w1 ... b2 None, a
    spatial gate required: ultralytics' SpatialAttention alone).
    Spatial gate: ``sa = spatial_gate(BN(conv2d(s, conv_weight, conv_bias)))``,
    same padding, with s the mean and max of u over channels stacked as
    spatial_input "mean_max" or "max_mean" (conv_weight (1, 2, k, k)), or "mix"
    (0.5 mean + 0.5 max, conv_weight (1, 1, k, k)); "none" skips the spatial gate.
    bn: BatchNorm2d(1) after the conv with bn_weight/bn_bias (or None) and
    running_mean/running_var; in training mode (or without running statistics)
    it normalises with the batch statistics and updates the running ones in
    place with ``momentum``, as F.batch_norm does.
    first_max: a max's gradient goes to the first maximal element (max_pool2d,
    torch.max(dim)); otherwise equal maxima share it (amax).
    backend: as for ``squeeze_excite``."""
    check_activation_4d(x)
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    for name, value in (("channel_gate", channel_gate), ("spatial_gate", spatial_gate)):
        if value not in GATES:
            raise ValueError(f"{name} must be one of {sorted(GATES)}, got {value!r}")
    if channel_pool not in cbam_ops.CHANNEL_POOLS:
        raise ValueError(f"channel_pool must be one of {sorted(cbam_ops.CHANNEL_POOLS)}, "
                         f"got {channel_pool!r}")
    if spatial_input not in cbam_ops.SPATIAL_INPUTS:
        raise ValueError(f"spatial_input must be one of {sorted(cbam_ops.SPATIAL_INPUTS)}, "
                         f"got {spatial_input!r}")
    channel = channel_pool != "none"
    spatial = spatial_input != "none"
    if channel:
        check_mlp(x, w1, b1, w2, b2, act)
    elif any(w is not None for w in (w1, b1, w2, b2)):
        raise ValueError("channel_pool='none' takes no channel MLP: w1, b1, w2 and b2 must be None")
    elif not spatial:
        raise ValueError("channel_pool='none' needs a spatial gate (spatial_input 'none' "
                         "would leave no gate at all)")
    if spatial:
        in_ch = 1 if spatial_input == "mix" else 2
        if (not isinstance(conv_weight, torch.Tensor) or conv_weight.dim() != 4
                or conv_weight.shape[:2] != (1, in_ch) or conv_weight.shape[2] != conv_weight.shape[3]
                or conv_weight.shape[2] % 2 != 1):
            raise ValueError(f"conv_weight must be a (1, {in_ch}, k, k) tensor with k odd for "
                             f"spatial_input={spatial_input!r}, got "
                             f"{tuple(conv_weight.shape) if isinstance(conv_weight, torch.Tensor) else conv_weight}")
        check_param(x, conv_weight, "conv_weight", tuple(conv_weight.shape))
        check_param(x, conv_bias, "conv_bias", (1,))
        check_batch_norm(x, bn, 1, bn_weight=bn_weight, bn_bias=bn_bias,
                          running_mean=running_mean, running_var=running_var)

    name = _backend.select(x, backend, family_reasons, _BACKEND_REASONS,
                           inductor_fuses=INDUCTOR_FUSES,
                           autograd_inputs=(x, w1, b1, w2, b2, conv_weight, conv_bias, bn_weight,
                                            bn_bias))
    kwargs = dict(act=act, channel_gate=channel_gate, channel_pool=channel_pool,
                  spatial_input=spatial_input, spatial_gate=spatial_gate, bn=bn and spatial,
                  bn_weight=bn_weight, bn_bias=bn_bias, running_mean=running_mean,
                  running_var=running_var, training=training, momentum=momentum, eps=eps,
                  first_max=first_max)
    if name == "reference":
        return reference.convolutional_block_attention(x, w1, b1, w2, b2, conv_weight,
                                                       conv_bias, **kwargs)
    norm = BatchNormCall(bn and spatial, training, running_mean, running_var, momentum)
    config = [cbam_ops.CHANNEL_POOLS[channel_pool], ACTIVATIONS[act], GATES[channel_gate],
              cbam_ops.SPATIAL_INPUTS[spatial_input], GATES[spatial_gate], norm.mode,
              int(first_max)]
    if not channel:  # the op's w1 is a tensor: an empty one, never read
        w1 = x.new_empty((0, x.shape[1]))
    y, batch_mean, batch_var, *_saved = call_forward(
        forward_op(name), (x, w1, b1, w2, b2, conv_weight, conv_bias, bn_weight, bn_bias,
                           *norm.op_running), config, eps)
    norm.after(x, batch_mean, batch_var)
    return y




def forward_op(backend: str):
    """The composite forward op of ``backend``: the native one (C++,
    csrc/composite/cbam.cpp), or for "triton" the Python one on the Triton passes."""
    if backend == "triton":
        from . import triton  # noqa: F401  (registers it; a plain import, which dynamo traces)
    return composite_forward_op(__package__, backend)
