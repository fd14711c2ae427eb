"""One function per module family; each validates its arguments and picks the backend."""
from typing import Dict, List, Optional, Sequence, Union

import torch

from . import _backend, _extension
from . import reference
from .ops._common import autograd_records, call_forward
from .reference._layers import ACTIVATIONS, GATES

POOLS = {"avg": 0, "avg_max": 1}


def _check_activation_4d(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")


def _check_param(x, t, name, shape) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")


def _check_first_layer(x, w1, b1) -> int:
    """w1 (R, C) and b1 (R,) of a layer over the C channels of x; returns R."""
    if not isinstance(w1, torch.Tensor) or w1.dim() != 2:
        raise ValueError(f"w1 must be a 2-D (reduced, C) tensor, got "
                         f"{tuple(w1.shape) if isinstance(w1, torch.Tensor) else type(w1).__name__}")
    reduced = w1.shape[0]
    if w1.shape[1] != x.shape[1]:  # name the input: the weights are usually right
        raise ValueError(f"x has {x.shape[1]} channels, but the module's gate network expects "
                         f"{w1.shape[1]} (w1 must have shape {(reduced, x.shape[1])} for this x, "
                         f"got {tuple(w1.shape)})")
    _check_param(x, w1, "w1", (reduced, x.shape[1]))
    _check_param(x, b1, "b1", (reduced,))
    return reduced


def _check_mlp(x, w1, b1, w2, b2, act) -> None:
    """W2 act(W1 s + b1) + b2 over the C channels of x; w2=None: one layer W1 (C, C)."""
    channels = x.shape[1]
    reduced = _check_first_layer(x, w1, b1)
    if w2 is None:
        if reduced != channels:
            raise ValueError(f"a one-layer gate (w2=None) needs w1 of shape ({channels}, {channels}), "
                             f"got {tuple(w1.shape)}")
        if b2 is not None:
            raise ValueError("b2 given without w2")
        if act != "identity":
            raise ValueError("a one-layer gate (w2=None) has no activation: act must be 'identity'")
    _check_param(x, w2, "w2", (channels, reduced))
    _check_param(x, b2, "b2", (channels,))


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
    _check_activation_4d(x)
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {sorted(POOLS)}, got {pool!r}")
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    if gate not in GATES:
        raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
    _check_mlp(x, w1, b1, w2, b2, act)

    name = _backend.select(x, backend, family_reasons)
    if name == "reference":
        return reference.squeeze_excite(x, w1, b1, w2, b2, pool, act, gate)
    codes = (POOLS[pool], ACTIVATIONS[act], GATES[gate])
    if name == "triton":
        from .triton import se as triton_se

        return triton_se.se_forward(x, w1, b1, w2, b2, *codes)
    from .ops import se as se_ops

    return se_ops.se_forward(x, w1, b1, w2, b2, *codes)


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
    _check_activation_4d(x)
    if gate not in GATES:
        raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() == 3 and weight.shape[:2] == (1, 1):
        weight = weight.reshape(-1)
    if weight.dim() != 1 or weight.shape[0] % 2 != 1:
        raise ValueError(f"weight must be a (k,) or (1, 1, k) conv1d kernel with k odd, "
                         f"got shape {tuple(weight.shape)}")
    _check_param(x, weight, "weight", (weight.shape[0],))
    _check_param(x, bias, "bias", (1,))
    pad = (weight.shape[0] - 1) // 2
    if circular and pad > x.shape[1]:
        raise ValueError(f"circular padding of {pad} channels needs at least {pad} channels, "
                         f"x has {x.shape[1]}")

    name = _backend.select(x, backend, family_reasons)
    if name == "reference":
        return reference.efficient_channel_attention(x, weight, bias, circular, gate)
    if name == "triton":
        from .triton import eca as triton_eca

        return triton_eca.eca_forward(x, weight, bias, circular, GATES[gate])
    from .ops import eca as eca_ops

    return eca_ops.eca_forward(x, weight, bias, circular, GATES[gate])


def _cuda_kernel_reasons(op: str, family: str) -> Dict[str, List[str]]:
    """{"cuda": [why]} when the extension was built without ``op``'s CUDA kernel."""
    if _extension.load() and not _extension.has_kernel(op, "CUDA"):
        return {"cuda": [f"the extension has no CUDA kernels for {family}"]}
    return {}


# Read once, at import: no dispatcher lookups inside compiled regions.
_CBAM_BACKEND_REASONS = _cuda_kernel_reasons("cbam_apply", "CBAM")
_COORD_BACKEND_REASONS = _cuda_kernel_reasons("coord_apply", "Coordinate Attention")
_TRIPLET_BACKEND_REASONS = _cuda_kernel_reasons("triplet_apply", "Triplet Attention")


def convolutional_block_attention(
        x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor] = None,
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
    "max", over H*W.
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
    _check_activation_4d(x)
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    for name, value in (("channel_gate", channel_gate), ("spatial_gate", spatial_gate)):
        if value not in GATES:
            raise ValueError(f"{name} must be one of {sorted(GATES)}, got {value!r}")
    from .ops import cbam as cbam_ops

    if channel_pool not in cbam_ops.CHANNEL_POOLS:
        raise ValueError(f"channel_pool must be one of {sorted(cbam_ops.CHANNEL_POOLS)}, "
                         f"got {channel_pool!r}")
    if spatial_input not in cbam_ops.SPATIAL_INPUTS:
        raise ValueError(f"spatial_input must be one of {sorted(cbam_ops.SPATIAL_INPUTS)}, "
                         f"got {spatial_input!r}")
    _check_mlp(x, w1, b1, w2, b2, act)
    spatial = spatial_input != "none"
    if spatial:
        in_ch = 1 if spatial_input == "mix" else 2
        if (not isinstance(conv_weight, torch.Tensor) or conv_weight.dim() != 4
                or conv_weight.shape[:2] != (1, in_ch) or conv_weight.shape[2] != conv_weight.shape[3]
                or conv_weight.shape[2] % 2 != 1):
            raise ValueError(f"conv_weight must be a (1, {in_ch}, k, k) tensor with k odd for "
                             f"spatial_input={spatial_input!r}, got "
                             f"{tuple(conv_weight.shape) if isinstance(conv_weight, torch.Tensor) else conv_weight}")
        _check_param(x, conv_weight, "conv_weight", tuple(conv_weight.shape))
        _check_param(x, conv_bias, "conv_bias", (1,))
        _check_batch_norm(x, bn, 1, bn_weight=bn_weight, bn_bias=bn_bias,
                          running_mean=running_mean, running_var=running_var)

    name = _backend.select(x, backend, family_reasons, _CBAM_BACKEND_REASONS)
    kwargs = dict(act=act, channel_gate=channel_gate, channel_pool=channel_pool,
                  spatial_input=spatial_input, spatial_gate=spatial_gate, bn=bn and spatial,
                  bn_weight=bn_weight, bn_bias=bn_bias, running_mean=running_mean,
                  running_var=running_var, training=training, momentum=momentum, eps=eps,
                  first_max=first_max)
    if name == "reference":
        return reference.cbam.convolutional_block_attention(x, w1, b1, w2, b2, conv_weight,
                                                            conv_bias, **kwargs)
    bn_stats = bn and spatial and (training or running_mean is None)
    bn_mode = (cbam_ops.BN_NONE if not (bn and spatial)
               else cbam_ops.BN_BATCH if bn_stats else cbam_ops.BN_RUNNING)
    config = [cbam_ops.CHANNEL_POOLS[channel_pool], ACTIVATIONS[act], GATES[channel_gate],
              cbam_ops.SPATIAL_INPUTS[spatial_input], GATES[spatial_gate], bn_mode, int(first_max)]
    y, batch_mean, batch_var, *_saved = call_forward(
        cbam_ops.forward_op(name), (x, w1, b1, w2, b2, conv_weight, conv_bias, bn_weight, bn_bias,
                                    None if bn_stats else running_mean,
                                    None if bn_stats else running_var), config, eps)
    if bn_stats and training and running_mean is not None:
        _update_running_stats(x, [running_mean, running_var], [batch_mean, batch_var],
                              momentum)
    return y


def _update_running_stats(x, running: List[torch.Tensor], batch: List[torch.Tensor],
                          momentum: float) -> None:
    """F.batch_norm's update in training mode, r = (1 - momentum) r + momentum * b, of
    each running statistic r (means and variances, one or more BatchNorms) with its
    batch statistic b (the variance unbiased), in two foreach calls (at batch 1 the
    per-tensor in-place ops are a visible part of a call). An empty x leaves them as
    they are, as F.batch_norm does (the ops' batch statistics are then zeros:
    ``normalise_saving``)."""
    if x.numel() == 0:
        return
    with torch.no_grad():
        torch._foreach_mul_(running, 1 - momentum)
        torch._foreach_add_(running, batch, alpha=momentum)


def _check_batch_norm(x, bn, width, **tensors) -> None:
    for name, t in tensors.items():
        if t is not None and not bn:
            raise ValueError(f"{name} given with bn=False")
        _check_param(x, t, name, (width,))
    if (tensors["running_mean"] is None) != (tensors["running_var"] is None):
        raise ValueError("give both running_mean and running_var, or neither")


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
    _check_activation_4d(x)
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    if gate not in GATES:
        raise ValueError(f"gate must be one of {sorted(GATES)}, got {gate!r}")
    channels = x.shape[1]
    reduced = _check_first_layer(x, w1, b1)
    for name, w, b in (("wh", wh, bh), ("ww", ww, bw)):
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
        _check_param(x, w, name, (channels, reduced))
        _check_param(x, b, "b" + name[1], (channels,))
    _check_batch_norm(x, bn, reduced, bn_weight=bn_weight, bn_bias=bn_bias,
                      running_mean=running_mean, running_var=running_var)

    name = _backend.select(x, backend, family_reasons, _COORD_BACKEND_REASONS)
    if name == "reference":
        return reference.coord.coordinate_attention(
            x, w1, b1, wh, bh, ww, bw, act=act, gate_fn=gate, bn=bn, bn_weight=bn_weight,
            bn_bias=bn_bias, running_mean=running_mean, running_var=running_var,
            training=training, momentum=momentum, eps=eps, skip=skip)
    from .ops import coord as coord_ops

    bn_stats = bn and (training or running_mean is None)
    bn_mode = (coord_ops.BN_NONE if not bn
               else coord_ops.BN_BATCH if bn_stats else coord_ops.BN_RUNNING)
    tensors = (x, w1, b1, wh, bh, ww, bw, bn_weight, bn_bias,
               None if bn_stats else running_mean, None if bn_stats else running_var)
    config = [ACTIVATIONS[act], GATES[gate], bn_mode, int(skip), int(autograd_records(tensors))]
    y, batch_mean, batch_var, *_saved = call_forward(coord_ops.forward_op(name), tensors, config,
                                                     eps)
    if bn_stats and training and running_mean is not None:
        _update_running_stats(x, [running_mean, running_var], [batch_mean, batch_var],
                              momentum)
    return y


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
            _check_param(x, v, f"{name}[{i}]", shape)
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
    _check_activation_4d(x)
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
        _check_param(x, w, f"conv_weights[{i}]", (1, 2, k, k))
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

    name = _backend.select(x, backend, family_reasons, _TRIPLET_BACKEND_REASONS)
    if name == "reference":
        return reference.triplet.triplet_attention(
            x, weights, biases, bn=bn, bn_weights=bn_parts["bn_weights"],
            bn_biases=bn_parts["bn_biases"], running_means=bn_parts["running_means"],
            running_vars=bn_parts["running_vars"], training=training, momentum=momenta, eps=eps,
            no_spatial=no_spatial)
    from .ops import triplet as triplet_ops

    r_means, r_vars = bn_parts["running_means"], bn_parts["running_vars"]
    bn_stats = bn and (training or r_means is None)
    bn_mode = (triplet_ops.BN_NONE if not bn
               else triplet_ops.BN_BATCH if bn_stats else triplet_ops.BN_RUNNING)
    cat = (lambda ts: None if ts is None else torch.cat(ts))  # noqa: E731
    tensors = (x, torch.cat(weights), cat(biases), cat(bn_parts["bn_weights"]),
               cat(bn_parts["bn_biases"]), None if bn_stats else cat(r_means),
               None if bn_stats else cat(r_vars))
    y, *_, batch_mean, batch_var = call_forward(
        triplet_ops.forward_op(name), tensors,
        [bn_mode, int(not no_spatial), int(autograd_records(tensors))], eps)
    if bn_stats and training and r_means is not None:
        batch_means, batch_vars = batch_mean.split(1), batch_var.split(1)
        if len(set(momenta)) == 1:
            _update_running_stats(x, [*r_means, *r_vars], [*batch_means, *batch_vars],
                                  momenta[0])
        else:
            for g in range(branches):
                _update_running_stats(x, [r_means[g], r_vars[g]],
                                      [batch_means[g], batch_vars[g]], momenta[g])
    return y
