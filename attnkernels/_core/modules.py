"""What every family of drop-in modules shares: the flavour factory and the
fallback to the reference forward for configurations with no fused kernel."""
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .matching import has_call_hooks, parameter_channels


class FusedFamily(nn.Module):
    """Base of a family's root class (e.g. ``SqueezeExcite``), which declares
    ``FLAVOURS = {}`` and ``DEFAULT_FLAVOUR``; each flavour subclasses the root
    and its reference class, with ``flavour="name"`` in its class statement,
    so the constructor arguments, submodule names, state_dict keys and shapes
    are exactly the original's; only ``forward`` changes, to the fused
    functional. ``Root(..., flavour="name")`` then builds that flavour's class."""

    backend: Optional[str] = None  # per-module backend choice; None follows use_backend()
    # Plain (non-module) attributes of an upstream module that the fused forward
    # reads; attnkernels.convert copies them over with the submodules.
    ADOPTED_ATTRS: Tuple[str, ...] = ()
    # The family's functional that ``forward`` calls with ``gate_spec()``'s
    # arguments (a staticmethod), for families whose forward is that call.
    FUNCTIONAL = None

    def __new__(cls, *args, flavour: Optional[str] = None, **kwargs):
        if "FLAVOURS" in cls.__dict__:  # the family root: pick the flavour's class
            flavour = flavour or cls.DEFAULT_FLAVOUR
            if flavour not in cls.FLAVOURS:
                raise ValueError(f"unknown {cls.FAMILY} flavour {flavour!r}; expected one of "
                                 f"{sorted(cls.FLAVOURS)}")
            cls = cls.FLAVOURS[flavour]
        return super().__new__(cls)

    def __init__(self, *args, flavour: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)

    def __setattr__(self, name, value):
        if name == "backend" and value is not None:  # a typo fails here, not at the next call
            from . import backend as _backend

            _backend.checked(value)
        super().__setattr__(name, value)

    def __init_subclass__(cls, flavour: Optional[str] = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if flavour is not None:
            cls.FLAVOURS[flavour] = cls
            cls.flavour = flavour

    def probe_channels(self) -> Optional[int]:
        """A channel count this module takes (attnkernels.convert's probe input)."""
        return parameter_channels(self)

    def probe_size(self) -> Tuple[int, int]:
        """An (H, W) this module takes (attnkernels.convert's probe input)."""
        return (5, 7)

    def input_reason(self, x: torch.Tensor) -> Optional[str]:
        """Why this input has no fused kernel (None: it has one)."""
        return None

    def gate_spec(self):
        """The functional's keyword arguments, read from the module's own
        submodules, or the reason (a str) there is no fused kernel for them."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused_forward(x, type(self).FUNCTIONAL)

    def fused_forward(self, x: torch.Tensor, functional) -> torch.Tensor:
        """``functional(x, backend=..., **self.gate_spec())``, or the reference
        forward when gate_spec() or input_reason(x) gives a reason. A BatchNorm
        module in the spec (key ``batch_norm``, or ``batch_norms`` for one per
        branch) becomes its arguments only now, as it counts the batch."""
        parts = self.gate_spec()
        why = parts if isinstance(parts, str) else self.input_reason(x)
        if why:
            return self.reference_forward(x, why)
        bn = parts.pop("batch_norm", None)
        if bn is not None:
            parts.update(batch_norm_parts(bn))
        bns = parts.pop("batch_norms", None)
        if bns is not None:
            parts.update(batch_norms_parts(bns))
        return functional(x, backend=self.backend, **parts)

    def reference_module(self) -> nn.Module:
        return reference_module(self)

    def reference_forward(self, x: torch.Tensor, reason: str) -> torch.Tensor:
        """No fused kernel for this configuration (``reason``): auto runs the
        reference module's forward (same numbers); an explicit fused backend raises."""
        from . import backend as _backend

        _backend.select(x, self.backend, [reason])
        return super().forward(x)


def pin_backend(model: nn.Module, backend: Optional[str]) -> nn.Module:
    """Sets ``backend`` ("cpu", "triton", ...; None: follow use_backend()) on
    every fused module of ``model``, in place; returns ``model``."""
    for m in model.modules():
        if isinstance(m, FusedFamily):
            m.backend = backend
    return model


class RoutedModule(nn.Module):
    """Root of a routed family's drop-in classes (their core goes to library
    kernels): the forward calls the submodules it does not rewrite, so convert
    may take modules whose submodules carry hooks (``gate_spec`` refuses hooks
    on those it uses by their parameters instead)."""

    CALLS_SUBMODULES = True
    ADOPTED_ATTRS: Tuple[str, ...] = ()  # the plain attributes the forward reads

    def probe_size(self) -> Tuple[int, int]:
        """An (H, W) this module takes (attnkernels.convert's probe input)."""
        return (5, 7)

    def reference_module(self) -> nn.Module:
        return reference_module(self)


def uncalled_hooks_reason(used: Dict[str, nn.Module]) -> Optional[str]:
    """Why a rewrite cannot take a module: one of the submodules it uses by
    their parameters instead of calling them (``used``, by name) has hooks,
    which would not run (None: none has)."""
    for name, m in used.items():
        if has_call_hooks(m):
            return f"its {name} has hooks, which the rewrite would not call"
    return None


def reference_module(module: nn.Module) -> nn.Module:
    """A copy of a drop-in module as its upstream (reference) class: same
    submodules, weights, buffers and mode, the upstream forward."""
    import copy

    twin = copy.deepcopy(module)
    twin.__class__ = next(c for c in type(module).__mro__ if c.__module__.endswith(".reference"))
    return twin


def batch_norm_parts(bn: nn.BatchNorm2d) -> Dict:
    """The BatchNorm arguments of the functionals (bn, bn_weight, ..., eps), as _BatchNorm.forward
    would use them (this counts the batch when training, as it does)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    keep = not bn.training or bn.track_running_stats
    return dict(bn=True, bn_weight=bn.weight, bn_bias=bn.bias,
                running_mean=bn.running_mean if keep else None,
                running_var=bn.running_var if keep else None,
                training=bn.training or (bn.running_mean is None and bn.running_var is None),
                momentum=momentum, eps=bn.eps)


def batch_norms_reason(bns) -> Optional[str]:
    """Why per-branch BatchNorms cannot share one fused call (None: they can)."""
    if not all(isinstance(b, nn.BatchNorm2d) for b in bns):
        return "its norm layers are not all BatchNorm2d"
    keys = {(b.training, b.track_running_stats, b.eps, b.affine, b.running_mean is None)
            for b in bns}
    if len(keys) > 1:
        return "its BatchNorm layers differ in mode, eps, affine or running statistics"
    return None


def batch_norms_parts(bns) -> Dict:
    """batch_norm_parts of one BatchNorm per branch (alike, see batch_norms_reason), as
    sequences: bn_weights, bn_biases, running_means, running_vars, momentum."""
    parts = [batch_norm_parts(b) for b in bns]
    seq = (lambda key: None if parts[0][key] is None else [p[key] for p in parts])  # noqa: E731
    return dict(bn=True, bn_weights=seq("bn_weight"), bn_biases=seq("bn_bias"),
                running_means=seq("running_mean"), running_vars=seq("running_var"),
                training=parts[0]["training"], momentum=[p["momentum"] for p in parts],
                eps=parts[0]["eps"])


def matrix_of(layer: nn.Module) -> torch.Tensor:
    """A 1x1 conv's or a Linear's weight as (out, in)."""
    return layer.weight.reshape(layer.weight.shape[0], -1)


def is_1x1(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
            and layer.padding == (0, 0) and layer.groups == 1)
