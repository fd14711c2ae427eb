"""Efficient Channel Attention as a function: validates its arguments and picks the backend."""
from typing import List, Optional

import torch

from .._core import backend as _backend
from .._core.functional import check_activation_4d, check_param
from .._core.layers import GATES
from . import op as eca_ops
from . import reference

__all__ = ["efficient_channel_attention"]

# Under torch.compile, auto gives ECA to inductor as its reference
# decomposition (see se/functional.py; measured on whole networks, docs/design.md).
INDUCTOR_FUSES = True


def efficient_channel_attention(x: torch.Tensor, weight: torch.Tensor,
                                bias: Optional[torch.Tensor] = None, *, circular: bool = False,
                                gate: str = "sigmoid", backend: Optional[str] = None,
                                family_reasons: List[str] = ()) -> torch.Tensor:
    """Efficient Channel Attention: ``x * gate(conv1d(mean_hw(x), weight, bias))``
    over the channel axis.

    x: (N, C, H, W), NCHW or channels_last. weight: the conv1d kernel, (k,) or
    (1, 1, k) with k odd; bias: (1,) or None. circular: pad the channel axis
    circularly (timm CecaModule) instead of with zeros; circular padding needs
    (k - 1) / 2 <= C, as F.pad does. gate: sigmoid/hard_sigmoid. backend: as
    for ``squeeze_excite``."""
    check_activation_4d(x)
    if gate not in GATES:
        raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() == 3 and weight.shape[:2] == (1, 1):
        weight = weight.reshape(-1)
    if weight.dim() != 1 or weight.shape[0] % 2 != 1:
        raise ValueError(f"weight must be a (k,) or (1, 1, k) conv1d kernel with k odd, "
                         f"got shape {tuple(weight.shape)}")
    check_param(x, weight, "weight", (weight.shape[0],))
    check_param(x, bias, "bias", (1,))
    pad = (weight.shape[0] - 1) // 2
    if circular and pad > x.shape[1]:
        raise ValueError(f"circular padding of {pad} channels needs at least {pad} channels, "
                         f"x has {x.shape[1]}")

    name = _backend.select(x, backend, family_reasons,
                           inductor_fuses=INDUCTOR_FUSES)
    if name == "reference":
        return reference.efficient_channel_attention(x, weight, bias, circular, gate)
    if name == "triton":
        from . import triton as triton_eca

        return triton_eca.eca_forward(x, weight, bias, circular, GATES[gate])
    return eca_ops.eca_forward(x, weight, bias, circular, GATES[gate])
