"""What every family of drop-in modules shares: the flavour factory and the
fallback to the reference forward for configurations with no fused kernel."""
from typing import Optional

import torch
from torch import nn


class FusedFamily(nn.Module):
    """Base of a family's root class (e.g. ``SqueezeExcite``), which declares
    ``FLAVOURS = {}`` and ``DEFAULT_FLAVOUR``; each flavour subclasses the root
    and its reference class, with ``flavour="name"`` in its class statement.
    ``Root(..., flavour="name")`` then builds that flavour's class."""

    backend: Optional[str] = None  # per-module backend choice; None follows use_backend()

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

    def __init_subclass__(cls, flavour: Optional[str] = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if flavour is not None:
            cls.FLAVOURS[flavour] = cls
            cls.flavour = flavour

    def reference_module(self) -> nn.Module:
        """A copy of this module as its upstream (reference) class: same
        submodules, weights, buffers and mode, the upstream forward."""
        import copy

        ref_cls = next(c for c in type(self).__mro__
                       if c.__module__.startswith("attnkernels.reference."))
        twin = copy.deepcopy(self)
        twin.__class__ = ref_cls
        return twin

    def reference_forward(self, x: torch.Tensor, reason: str) -> torch.Tensor:
        """No fused kernel for this configuration (``reason``): auto runs the
        reference module's forward (same numbers); an explicit fused backend raises."""
        from .. import _backend

        _backend.select(x, self.backend, [reason])
        return super().forward(x)
