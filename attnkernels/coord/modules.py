"""Drop-in Coordinate Attention modules.

Each flavour is its reference class with the fused ``forward`` (see
``attnkernels._core.modules.FusedFamily``).
``CoordinateAttention(..., flavour=...)`` builds any of them::

    CoordinateAttention(256)                                  # timm CoordAttn
    CoordinateAttention(256, 256, flavour="official")         # houqb CoordAtt(inp, oup, reduction)
    CoordinateAttention(256, 256, flavour="official_groups")  # mbv2_ca CoordAtt(inp, oup, groups)
    CoordinateAttention(256, 56, 56, flavour="seed")          # the seeds' CA_Block(channel, h, w)

BatchNorm behaves as nn.BatchNorm2d does over the concatenated strips: batch
statistics and a running-statistics update in training mode, the running
statistics in eval mode.
"""
from typing import Dict, Union

import torch
from torch import nn

from . import functional as F
from . import reference as ref
from .._core.layers import activation_name, gate_name
from .._core.modules import FusedFamily, is_1x1, matrix_of

__all__ = ["CoordinateAttention", "CoordAtt", "CoordAttGroups", "CA_Block", "CoordAttn"]

# keyword arguments of F.coordinate_attention, or the reason the module's
# configuration has no fused kernel
Parts = Union[Dict, str]


def coord_parts(conv1, norm, act, conv_h, conv_w, gate) -> Parts:
    """The gate network from its layers (norm: a BatchNorm2d, or None / Identity)."""
    if not all(is_1x1(c) and isinstance(c, nn.Conv2d) for c in (conv1, conv_h, conv_w)):
        return "its convolutions are not 1x1 convolutions"
    if norm is not None and not isinstance(norm, (nn.BatchNorm2d, nn.Identity)):
        return f"its norm layer {type(norm).__name__} has no fused kernel (BatchNorm2d only)"
    try:
        names = dict(act=activation_name(act), gate=gate_name(gate))
    except ValueError as e:
        return str(e)
    return dict(w1=matrix_of(conv1), b1=conv1.bias, wh=matrix_of(conv_h), bh=conv_h.bias,
                ww=matrix_of(conv_w), bw=conv_w.bias,
                batch_norm=norm if isinstance(norm, nn.BatchNorm2d) else None, **names)


class CoordinateAttention(FusedFamily):
    """Fused Coordinate Attention; ``flavour`` picks whose constructor and keys."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "CoordAtt", {}, "timm"
    ADOPTED_ATTRS = ("h", "w", "has_skip")  # the seeds' CA_Block; timm's CoordAttn
    FUNCTIONAL = staticmethod(F.coordinate_attention)


class CoordAtt(CoordinateAttention, ref.CoordAtt, flavour="official"):
    """houqb/CoordAttention ``CoordAtt(inp, oup, reduction=32)``."""

    def gate_spec(self) -> Parts:
        return coord_parts(self.conv1, self.bn1, self.act, self.conv_h, self.conv_w, nn.Sigmoid())


class CoordAttGroups(CoordinateAttention, ref.CoordAttGroups, flavour="official_groups"):
    """The released-weights variant ``CoordAtt(inp, oup, groups=32)`` (keys conv2/conv3)."""

    def gate_spec(self) -> Parts:
        return coord_parts(self.conv1, self.bn1, self.relu, self.conv2, self.conv3, nn.Sigmoid())


class CA_Block(CoordinateAttention, ref.CA_Block, flavour="seed"):
    """The seeds' ``CA_Block(channel, h, w, reduction=16)`` (its ``bn`` is never applied)."""

    def probe_size(self):
        return (self.h, self.w)  # fixed at construction

    def gate_spec(self) -> Parts:
        return coord_parts(self.conv_1x1, None, self.relu, self.F_h, self.F_w, self.sigmoid_h)

    def input_reason(self, x: torch.Tensor):
        if (x.shape[2], x.shape[3]) != (self.h, self.w):
            return (f"the input is {x.shape[2]}x{x.shape[3]}, not the fixed {self.h}x{self.w} "
                    "(upstream resamples the strips adaptively)")
        return None


class CoordAttn(CoordinateAttention, ref.CoordAttn, flavour="timm"):
    """timm CoordAttn ``(channels, rd_ratio, rd_channels, rd_divisor, se_factor, bias,
    act_layer, norm_layer, gate_layer, has_skip)``."""

    def gate_spec(self) -> Parts:
        parts = coord_parts(self.conv1, self.bn1, self.act, self.conv_h, self.conv_w, self.gate)
        if not isinstance(parts, str):
            parts["skip"] = self.has_skip
        return parts
