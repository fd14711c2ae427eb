"""SimAM as a function: validates its arguments and picks the backend."""
from typing import List, Optional

import torch

from .._core import backend as _backend
from .._core.functional import check_activation_4d
from . import op as simam_ops
from . import reference

__all__ = ["simam_attention"]


def simam_attention(x: torch.Tensor, e_lambda: float = 1e-4, *, backend: Optional[str] = None,
          family_reasons: List[str] = ()) -> torch.Tensor:
    """SimAM: ``x * sigmoid((x - mu)^2 / (4 (sum_hw (x - mu)^2 / (H*W - 1) + e_lambda)) + 0.5)``
    with mu the mean over H*W per (n, c); parameter-free.

    x: (N, C, H, W), NCHW or channels_last. A 1x1 map (H*W - 1 = 0) gives NaN,
    as upstream. backend: as for ``squeeze_excite``.

    Passes over x: forward, one statistics read (mean and sum of squared
    deviations, exact per chunk and merged across chunks) and one apply read
    and write; backward, one read of (dy, x) for two per-(n, c) sums and one
    read of (dy, x) and write of dx. Saved for backward: x and two (N, C)
    statistics."""
    check_activation_4d(x)
    if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)):
        raise TypeError(f"e_lambda must be a float, got {type(e_lambda).__name__}")

    name = _backend.select(x, backend, family_reasons)
    if name == "reference":
        return reference.simam_attention(x, e_lambda)
    if name == "triton":
        from . import triton as triton_simam

        return triton_simam.simam_forward(x, float(e_lambda))
    return simam_ops.simam_forward(x, float(e_lambda))
