"""Drop-in Efficient Channel Attention modules.

Each flavour is its reference class with the fused ``forward`` (see
``attnkernels._core.modules.FusedFamily``).
``EfficientChannelAttention(..., flavour=...)`` builds any of them::

    EfficientChannelAttention(256)                            # timm EcaModule
    EfficientChannelAttention(256, flavour="timm_circular")   # timm CecaModule
    EfficientChannelAttention(256, 5, flavour="official")     # eca_layer(channel, k_size)
    EfficientChannelAttention(256, flavour="seed")            # eca_block(channel, b, gamma)
    EfficientChannelAttention(3, flavour="seed_attention")    # ECAAttention(kernel_size)
"""
from typing import Tuple, Union

import torch

from . import functional as F
from . import reference as ref
from .._core.layers import gate_name
from .._core.modules import FusedFamily

__all__ = ["EfficientChannelAttention", "ECALayer", "ECABlock", "ECAAttention", "EcaModule", "CecaModule"]

# (weight, bias, circular, gate) for the functional, or the reason the
# module's configuration has no fused kernel.
Spec = Union[Tuple, str]


class EfficientChannelAttention(FusedFamily):
    """Fused ECA; ``flavour`` picks whose constructor and keys."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "ECA", {}, "timm"
    ADOPTED_ATTRS = ("padding", "act", "conv2")  # CecaModule; EcaModule (None unless use_mlp)

    def probe_channels(self) -> int:
        return 16 + self.conv.kernel_size[0]  # any channel count works; wider than the kernel

    def gate_spec(self) -> Spec:
        """The conv and gate from the module's own submodules."""
        gate_layer = getattr(self, "gate", None) or getattr(self, "sigmoid")
        try:
            gate = gate_name(gate_layer)
        except ValueError as e:
            return str(e)
        return self.conv.weight, self.conv.bias, False, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.gate_spec()
        if isinstance(spec, str):
            return self.reference_forward(x, spec)
        weight, bias, circular, gate = spec
        return F.efficient_channel_attention(x, weight, bias, circular=circular, gate=gate,
                                             backend=self.backend)


class ECALayer(EfficientChannelAttention, ref.ECALayer, flavour="official"):
    """The official ``eca_layer(channel, k_size=3)``."""


class ECABlock(EfficientChannelAttention, ref.ECABlock, flavour="seed"):
    """The seeds' ``eca_block(channel, b=1, gamma=2)``."""


class ECAAttention(EfficientChannelAttention, ref.ECAAttention, flavour="seed_attention"):
    """The seeds' ``ECAAttention(kernel_size=3)`` (conv with bias)."""


class EcaModule(EfficientChannelAttention, ref.EcaModule, flavour="timm"):
    """timm EcaModule: ``(channels, kernel_size, gamma, beta, act_layer, gate_layer, ..., use_mlp)``."""

    def gate_spec(self) -> Spec:
        if self.conv2 is not None:
            return "EcaModule(use_mlp=True) (timm's 'ecam' experiment) has no fused kernel"
        return super().gate_spec()


class CecaModule(EfficientChannelAttention, ref.CecaModule, flavour="timm_circular"):
    """timm CecaModule: ``(channels, kernel_size, gamma, beta, act_layer, gate_layer)``; circular padding."""

    def gate_spec(self) -> Spec:
        spec = super().gate_spec()
        if isinstance(spec, str):
            return spec
        weight, bias, _, gate = spec
        return weight, bias, True, gate


eca_layer = ECALayer
eca_block = ECABlock
