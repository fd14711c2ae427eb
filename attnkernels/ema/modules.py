"""Drop-in EMA modules.

Each flavour is its reference class with the fused ``forward``: the 3x3
convolution branch runs as upstream (a library op), the rest fused
(``functional.efficient_multiscale_attention``).
``EfficientMultiScaleAttention(..., flavour=...)`` builds either::

    EfficientMultiScaleAttention(64)                   # official EMA(channels, c2=None, factor=32)
    EfficientMultiScaleAttention(64, flavour="seed")   # seed 001's EMA(channels, factor=32)
"""
import torch
from torch import nn

from . import functional as F
from . import reference as ref
from .._core.modules import FusedFamily

__all__ = ["EfficientMultiScaleAttention", "EMA", "EMASeed"]


class EfficientMultiScaleAttention(FusedFamily):
    """Fused EMA; ``flavour`` picks whose constructor."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "EMA", {}, "official"
    ADOPTED_ATTRS = ("groups",)

    def probe_channels(self):
        return self.groups * self.conv1x1.in_channels

    def gate_spec(self):
        gn, c1 = self.gn, self.conv1x1
        g = c1.in_channels
        if not (isinstance(gn, nn.GroupNorm) and gn.num_groups == gn.num_channels == g):
            return "its norm is not a GroupNorm with one group per channel"
        if not (isinstance(c1, nn.Conv2d) and c1.kernel_size == (1, 1) and c1.stride == (1, 1)
                and c1.padding == (0, 0) and c1.dilation == (1, 1) and c1.groups == 1
                and c1.out_channels == g and c1.padding_mode == "zeros"):
            return "conv1x1 is not a plain 1x1 convolution over the group's channels"
        return dict(conv1x1_weight=c1.weight, conv1x1_bias=c1.bias, gn_weight=gn.weight,
                    gn_bias=gn.bias, groups=self.groups, eps=gn.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.gate_spec()
        if isinstance(parts, str):
            return self.reference_forward(x, parts)
        b, c, h, w = x.size()
        # upstream's reshape(b * groups, -1, h, w) cannot size an empty batch
        x2 = self.conv3x3(x.reshape(b * self.groups, c // self.groups, h, w))
        return F.efficient_multiscale_attention(x, x2, backend=self.backend, **parts)


class EMA(EfficientMultiScaleAttention, ref.EMA, flavour="official"):
    """The official ``EMA(channels, c2=None, factor=32)``."""


class EMASeed(EfficientMultiScaleAttention, ref.EMASeed, flavour="seed"):
    """Seed 001's ``EMA(channels, factor=32)``."""
