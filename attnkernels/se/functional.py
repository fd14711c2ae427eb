"""Squeeze-and-Excitation as a function: validates its arguments and picks the backend."""
from typing import List, Optional

import torch

from .._core import backend as _backend
from .._core.functional import check_activation_4d, check_mlp
from .._core.layers import ACTIVATIONS, GATES
from .._core.modes import Pool, codes
from . import op as se_ops
from . import reference

__all__ = ["squeeze_excite"]


POOLS = codes(Pool)
# Under torch.compile, auto gives SE to inductor as its reference decomposition
# (_core.backend.select): inductor fuses the pool into the BatchNorm before and
# the multiply into the residual add and ReLU after, which our opaque op
# prevents; measured faster on seresnet50 in both modes (docs/design.md).
INDUCTOR_FUSES = True


def squeeze_excite(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor] = None,
                   w2: Optional[torch.Tensor] = None, b2: Optional[torch.Tensor] = None, *,
                   pool: str = "avg", act: str = "relu", gate: str = "sigmoid",
                   backend: Optional[str] = None,
                   family_reasons: List[str] = ()) -> torch.Tensor:
    """Squeeze-and-Excitation: ``x * gate(W2 act(W1 pool(x) + b1) + b2)``.

    x: (N, C, H, W), NCHW or channels_last. w1: (R, C); w2: (C, R), or None for a
    one-layer gate (then w1 is (C, C) and act must be "identity"). pool: "avg" or
    "avg_max" (0.5 * mean + 0.5 * max). act: identity/relu/silu/hardswish.
    gate: sigmoid/hard_sigmoid. backend: None (the current choice), "auto",
    "cpu", "cuda", "triton" or "reference"."""
    check_activation_4d(x)
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {sorted(POOLS)}, got {pool!r}")
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    if gate not in GATES:
        raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
    check_mlp(x, w1, b1, w2, b2, act)

    name = _backend.select(x, backend, family_reasons,
                           inductor_fuses=INDUCTOR_FUSES)
    if name == "reference":
        return reference.squeeze_excite(x, w1, b1, w2, b2, pool, act, gate)
    codes = (POOLS[pool], ACTIVATIONS[act], GATES[gate])
    if name == "triton":
        from . import triton as triton_se

        return triton_se.se_forward(x, w1, b1, w2, b2, *codes)
    return se_ops.se_forward(x, w1, b1, w2, b2, *codes)
