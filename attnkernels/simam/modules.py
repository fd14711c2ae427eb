"""Drop-in SimAM modules.

Each flavour is its reference class with the fused ``forward`` (see
``attnkernels._core.modules.FusedFamily``).
``SimAMAttention(..., flavour=...)`` builds either::

    SimAMAttention()                               # official simam_module(channels, e_lambda)
    SimAMAttention(e_lambda=1e-4, flavour="yolo")  # the YOLO codebases' SimAM(e_lambda)
"""
from . import functional as F
from . import reference as ref
from .._core.modules import FusedFamily

__all__ = ["SimAMAttention", "SimAMModule", "SimAM"]


class SimAMAttention(FusedFamily):
    """Fused SimAM; ``flavour`` picks whose constructor."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "SimAM", {}, "official"
    ADOPTED_ATTRS = ("e_lambda",)
    FUNCTIONAL = staticmethod(F.simam_attention)

    def probe_channels(self) -> int:
        return 3  # parameter-free: any channel count

    def gate_spec(self):
        e_lambda = getattr(self, "e_lambda", None)
        if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)):
            return f"e_lambda is {e_lambda!r}, not a number"
        return dict(e_lambda=float(e_lambda))


class SimAMModule(SimAMAttention, ref.SimAMModule, flavour="official"):
    """The official ``simam_module(channels=None, e_lambda=1e-4)``."""


class SimAM(SimAMAttention, ref.SimAM, flavour="yolo"):
    """The YOLO codebases' ``SimAM(e_lambda=1e-4)``."""


simam_module = SimAMModule
