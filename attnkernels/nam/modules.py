"""Drop-in NAM channel-attention modules.

Each flavour is its reference class with the fused ``forward`` (see
``attnkernels._core.modules.FusedFamily``).
``NAMChannelAttention(channels, ..., flavour=...)`` builds either::

    NAMChannelAttention(64)                  # official Channel_Att(channels, t=16)
    NAMChannelAttention(64, flavour="yolo")  # the YOLO codebases' NAMAttention(channels)
"""
from torch import nn

from . import functional as F
from . import reference as ref
from .._core.modules import FusedFamily

__all__ = ["NAMChannelAttention", "Channel_Att", "NAMAttention"]


class NAMChannelAttention(FusedFamily):
    """Fused NAM channel attention; ``flavour`` picks whose constructor."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "NAM", {}, "official"
    FUNCTIONAL = staticmethod(F.nam_channel_attention)

    def batch_norm(self) -> nn.Module:
        return self.bn2

    def probe_channels(self):
        bn = self.batch_norm()
        return bn.num_features if isinstance(bn, nn.BatchNorm2d) else None

    def gate_spec(self):
        bn = self.batch_norm()
        if not isinstance(bn, nn.BatchNorm2d):
            return f"its norm layer is {type(bn).__name__}, not BatchNorm2d"
        if bn.weight is None or bn.bias is None:
            return "its BatchNorm has no affine weight and bias"
        return dict(batch_norm=bn)


class Channel_Att(NAMChannelAttention, ref.Channel_Att, flavour="official"):
    """The official ``Channel_Att(channels, t=16)``."""


class NAMAttention(NAMChannelAttention, ref.NAMAttention, flavour="yolo"):
    """The YOLO codebases' ``NAMAttention(channels)``."""

    def batch_norm(self) -> nn.Module:
        return self.Channel_Att.bn2
