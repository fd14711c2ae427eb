"""Triplet Attention as a function: validates its arguments and picks the backend."""
from typing import List, Optional, Sequence, Union

import torch

from .._core import backend as _backend
from .._core.functional import (batch_norm_mode, check_activation_4d, check_param,
                                cuda_kernel_reasons, update_running_stats)
from .._core.ops import autograd_records, call_forward, composite_forward_op
from . import reference

__all__ = ["triplet_attention"]


# Read once, at import: no dispatcher lookups inside compiled regions.
_BACKEND_REASONS = cuda_kernel_reasons("triplet_apply", "Triplet Attention")


def _per_branch(x, values, name, branches, shape, required=False) -> Optional[List]:
    """A sequence of one tensor per branch (each of ``shape``), or None."""
    if values is None:
        if required:
            raise ValueError(f"{name} is required")
        return None
    if isinstance(values, torch.Tensor) or len(values) != branches:
        raise ValueError(f"{name} must be a sequence of {branches} tensors (one per branch: "
                         f"cw, hc{', hw' if branches == 3 else ''})")
    values = list(values)
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise ValueError(f"{name}: give a tensor for every branch, or None for all")
    for i, v in enumerate(values):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(v).__name__}")
        if shape is not None:
            check_param(x, v, f"{name}[{i}]", shape)
    return values


def triplet_attention(
        x: torch.Tensor, conv_weights: Sequence[torch.Tensor],
        conv_biases: Optional[Sequence[Optional[torch.Tensor]]] = None, *, bn: bool = False,
        bn_weights: Optional[Sequence[torch.Tensor]] = None,
        bn_biases: Optional[Sequence[torch.Tensor]] = None,
        running_means: Optional[Sequence[torch.Tensor]] = None,
        running_vars: Optional[Sequence[torch.Tensor]] = None, training: bool = False,
        momentum: Union[float, Sequence[float]] = 0.01, eps: float = 1e-5,
        no_spatial: bool = False, backend: Optional[str] = None,
        family_reasons: List[str] = ()) -> torch.Tensor:
    """Triplet Attention: ``y = x * (s_hw[n, h, w] + s_cw[n, c, w] + s_hc[n, c, h]) / 3``,
    or ``x * (s_cw + s_hc) / 2`` with no_spatial.

    Each gate is ``sigmoid(BN(conv2d([max, mean], w, b)))`` over the map of x
    pooled over one axis, in the plane upstream convolves: s_cw pools over H
    and convolves over (C, W), s_hc pools over W and convolves over (H, C),
    s_hw pools over C and convolves over (H, W); the max is torch.max(dim)'s
    (its gradient goes to the first maximal element). Per-branch arguments are
    sequences in the order (cw, hc, hw), two entries with no_spatial:
    conv_weights (1, 2, k, k), k odd and the same for all, same padding;
    conv_biases (1,) or None. bn: a BatchNorm2d(1) per branch with bn_weights,
    bn_biases (or None) and running_means/running_vars (1,); in training mode
    (or without running statistics) it normalises with the batch statistics
    and updates the running ones in place with ``momentum`` (one for all, or
    one per branch), as F.batch_norm does. backend: as for ``squeeze_excite``.
    C, H and W must be non-zero (the max of nothing is undefined)."""
    check_activation_4d(x)
    if 0 in x.shape[1:]:
        raise ValueError(f"x must have non-zero C, H and W (the max over an empty axis is "
                         f"undefined), got shape {tuple(x.shape)}")
    branches = 2 if no_spatial else 3
    weights = _per_branch(x, conv_weights, "conv_weights", branches, None, required=True)
    k = weights[0].shape[-1] if weights[0].dim() == 4 else 0
    if k % 2 != 1:
        raise ValueError(f"conv_weights must be (1, 2, k, k) tensors with k odd, got "
                         f"{tuple(weights[0].shape)}")
    for i, w in enumerate(weights):
        check_param(x, w, f"conv_weights[{i}]", (1, 2, k, k))
    biases = _per_branch(x, conv_biases, "conv_biases", branches, (1,))
    bn_parts = {}
    for name, values in (("bn_weights", bn_weights), ("bn_biases", bn_biases),
                         ("running_means", running_means), ("running_vars", running_vars)):
        if values is not None and not bn:
            raise ValueError(f"{name} given with bn=False")
        bn_parts[name] = _per_branch(x, values, name, branches, (1,))
    if (bn_parts["running_means"] is None) != (bn_parts["running_vars"] is None):
        raise ValueError("give both running_means and running_vars, or neither")
    momenta = list(momentum) if isinstance(momentum, (list, tuple)) else [momentum] * branches
    if len(momenta) != branches:
        raise ValueError(f"momentum must be a float or {branches} floats, got {momentum!r}")

    name = _backend.select(x, backend, family_reasons, _BACKEND_REASONS)
    if name == "reference":
        return reference.triplet_attention(
            x, weights, biases, bn=bn, bn_weights=bn_parts["bn_weights"],
            bn_biases=bn_parts["bn_biases"], running_means=bn_parts["running_means"],
            running_vars=bn_parts["running_vars"], training=training, momentum=momenta, eps=eps,
            no_spatial=no_spatial)
    r_means, r_vars = bn_parts["running_means"], bn_parts["running_vars"]
    bn_mode, bn_stats = batch_norm_mode(bn, training, r_means is not None)
    cat = (lambda ts: None if ts is None else torch.cat(ts))  # noqa: E731
    tensors = (x, torch.cat(weights), cat(biases), cat(bn_parts["bn_weights"]),
               cat(bn_parts["bn_biases"]), None if bn_stats else cat(r_means),
               None if bn_stats else cat(r_vars))
    y, *_, batch_mean, batch_var = call_forward(
        forward_op(name), tensors,
        [bn_mode, int(not no_spatial), int(autograd_records(tensors))], eps)
    if bn_stats and training and r_means is not None:
        batch_means, batch_vars = batch_mean.split(1), batch_var.split(1)
        if len(set(momenta)) == 1:
            update_running_stats(x, [*r_means, *r_vars], [*batch_means, *batch_vars],
                                 momenta[0])
        else:
            for g in range(branches):
                update_running_stats(x, [r_means[g], r_vars[g]],
                                     [batch_means[g], batch_vars[g]], momenta[g])
    return y




def forward_op(backend: str):
    """The composite forward op of ``backend``: the native one (C++,
    csrc/composite/triplet.cpp), or for "triton" the Python one on the Triton passes."""
    if backend == "triton":
        from . import triton  # noqa: F401  (registers it; a plain import, which dynamo traces)
    return composite_forward_op(__package__, backend)
