"""Drop-in CBAM modules.

Each flavour is its reference class with the fused ``forward`` (see
``attnkernels._core.modules.FusedFamily``).
``ConvBlockAttention(..., flavour=...)`` builds any of them::

    ConvBlockAttention(256)                            # timm CbamModule
    ConvBlockAttention(256, flavour="timm_light")      # timm LightCbamModule
    ConvBlockAttention(256, flavour="official")        # Jongchan CBAM(gate_channels, ...)
    ConvBlockAttention(256, flavour="seed")            # the seeds' CBAM(in_planes, ratio, kernel_size)
    ConvBlockAttention(256, flavour="seed_block")      # the seeds' cbam_block (Sequential MLP)
    ConvBlockAttention(256, flavour="seed_block_fc")   # the seeds' cbam_block (fc1/fc2, conv1)
    ConvBlockAttention(256, flavour="ultralytics")     # Ultralytics CBAM(c1, kernel_size)
    ConvBlockAttention(7, flavour="ultralytics_spatial")  # Ultralytics SpatialAttention(kernel_size)
    ConvBlockAttention(256, flavour="seed_linear")     # seed 001's CBAM (Linear MLP)
    ConvBlockAttention(256, flavour="external")        # External-Attention's CBAMBlock (+ x)

BatchNorm (official, timm) behaves as nn.BatchNorm2d does: batch statistics
and a running-statistics update in training mode (num_batches_tracked and
momentum=None included), the running statistics in eval mode.
"""
from typing import Dict, Union

import torch
from torch import nn

from . import functional as F
from . import reference as ref
from .._core.layers import activation_name, gate_name
from .._core.modules import FusedFamily, is_1x1, matrix_of

__all__ = ["ConvBlockAttention", "CBAM", "CBAMBlock", "CBAMBlockFc", "OfficialCBAM", "CbamModule", "LightCbamModule", "UltralyticsCBAM", "UltralyticsSpatialAttention", "LinearCBAM", "ExternalCBAMBlock"]

# keyword arguments of F.convolutional_block_attention, or the reason the
# module's configuration has no fused kernel
Parts = Union[Dict, str]


def channel_parts(fc1: nn.Module, act: nn.Module, fc2: nn.Module, gate: nn.Module) -> Parts:
    """The shared MLP fc1 -> act -> fc2 (1x1 convs or Linear) and its gate."""
    if not (is_1x1(fc1) and is_1x1(fc2)):
        return "its MLP layers are not 1x1 convolutions or Linear layers"
    try:
        names = dict(act=activation_name(act), channel_gate=gate_name(gate))
    except ValueError as e:
        return str(e)
    return dict(w1=matrix_of(fc1), b1=fc1.bias, w2=matrix_of(fc2), b2=fc2.bias, **names)


def spatial_parts(conv: nn.Conv2d, gate, bn=None) -> Parts:
    """The spatial conv (same padding, odd square kernel), its gate and its
    BatchNorm module (or None), turned into arguments by batch_norm_parts."""
    k = conv.kernel_size
    if not (isinstance(conv, nn.Conv2d) and conv.out_channels == 1 and k[0] == k[1]
            and k[0] % 2 == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding == (k[0] // 2, k[0] // 2)
            and conv.padding_mode == "zeros"):
        return "its spatial conv is not a same-padded, stride-1 conv with an odd square kernel"
    if bn is not None and not isinstance(bn, nn.BatchNorm2d):  # SyncBatchNorm, say
        return f"its norm layer {type(bn).__name__} has no fused kernel (BatchNorm2d only)"
    try:
        return dict(conv_weight=conv.weight, conv_bias=conv.bias, spatial_gate=gate_name(gate),
                    batch_norm=bn)
    except ValueError as e:
        return str(e)


def combine(channel: Parts, spatial: Parts, **fixed) -> Parts:
    for part in (channel, spatial):
        if isinstance(part, str):
            return part
    return {**channel, **spatial, **fixed}


class ConvBlockAttention(FusedFamily):
    """Fused CBAM; ``flavour`` picks whose constructor and keys."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "CBAM", {}, "timm"
    ADOPTED_ATTRS = ("no_spatial",)  # the official CBAM
    FUNCTIONAL = staticmethod(F.convolutional_block_attention)


class CBAM(ConvBlockAttention, ref.CBAM, flavour="seed"):
    """The seeds' ``CBAM(in_planes, ratio=16, kernel_size=7)``."""

    def gate_spec(self) -> Parts:
        return combine(channel_parts(self.ca.fc1, self.ca.relu1, self.ca.fc2, self.ca.sigmoid),
                       spatial_parts(self.sa.conv1, self.sa.sigmoid),
                       channel_pool="avg_max", spatial_input="mean_max", first_max=True)


class CBAMBlock(ConvBlockAttention, ref.CBAMBlock, flavour="seed_block"):
    """The seeds' ``cbam_block(channel, ratio=8, kernel_size=7)`` with ``fc = Sequential(...)``."""

    def gate_spec(self) -> Parts:
        ca, sa = self.channelattention, self.spatialattention
        return combine(channel_parts(ca.fc[0], ca.fc[1], ca.fc[2], ca.sigmoid),
                       spatial_parts(sa.conv, sa.sigmoid),
                       channel_pool="avg_max", spatial_input="mean_max", first_max=True)


class CBAMBlockFc(ConvBlockAttention, ref.CBAMBlockFc, flavour="seed_block_fc"):
    """The seeds' ``cbam_block(channel, ratio=8, kernel_size=7)`` with fc1/relu1/fc2 and conv1."""

    def gate_spec(self) -> Parts:
        ca, sa = self.channelattention, self.spatialattention
        return combine(channel_parts(ca.fc1, ca.relu1, ca.fc2, ca.sigmoid),
                       spatial_parts(sa.conv1, sa.sigmoid),
                       channel_pool="avg_max", spatial_input="mean_max", first_max=True)


class OfficialCBAM(ConvBlockAttention, ref.OfficialCBAM, flavour="official"):
    """Jongchan's ``CBAM(gate_channels, reduction_ratio=16, pool_types=['avg', 'max'],
    no_spatial=False)``; pool types lp and lse run the reference forward."""

    _POOLS = {("avg",): "avg", ("max",): "max", ("avg", "max"): "avg_max", ("max", "avg"): "avg_max"}

    def gate_spec(self) -> Parts:
        gate = self.ChannelGate
        pools = tuple(p for p in gate.pool_types if p in ("avg", "max", "lp", "lse"))
        if pools not in self._POOLS:
            return f"pool_types {list(gate.pool_types)} has no fused kernel (fused: avg, max, or both)"
        _, fc1, act, fc2 = gate.mlp
        channel = channel_parts(fc1, act, fc2, "sigmoid")
        if self.no_spatial:
            spatial = dict(spatial_input="none")
        else:
            basic = self.SpatialGate.spatial
            if basic.relu is not None:
                return "its spatial BasicConv has a ReLU"
            spatial = spatial_parts(basic.conv, "sigmoid", basic.bn)
            if not isinstance(spatial, str):
                spatial["spatial_input"] = "max_mean"
        return combine(channel, spatial, channel_pool=self._POOLS[pools], first_max=True)


class CbamModule(ConvBlockAttention, ref.CbamModule, flavour="timm"):
    """timm CbamModule ``(channels, rd_ratio, rd_channels, rd_divisor, spatial_kernel_size,
    act_layer, gate_layer, mlp_bias)``."""

    def gate_spec(self) -> Parts:
        ch, sp = self.channel, self.spatial
        return combine(channel_parts(ch.fc1, ch.act, ch.fc2, ch.gate),
                       spatial_parts(sp.conv.conv, sp.gate, sp.conv.bn),
                       channel_pool="avg_max", spatial_input="mean_max", first_max=False)


class LightCbamModule(ConvBlockAttention, ref.LightCbamModule, flavour="timm_light"):
    """timm LightCbamModule (same constructor as CbamModule)."""

    def gate_spec(self) -> Parts:
        ch, sp = self.channel, self.spatial
        return combine(channel_parts(ch.fc1, ch.act, ch.fc2, "sigmoid"),
                       spatial_parts(sp.conv.conv, sp.gate, sp.conv.bn),
                       channel_pool="mix", spatial_input="mix", first_max=False)


class UltralyticsCBAM(ConvBlockAttention, ref.UltralyticsCBAM, flavour="ultralytics"):
    """Ultralytics ``CBAM(c1, kernel_size=7)``."""

    def gate_spec(self) -> Parts:
        ca, sa = self.channel_attention, self.spatial_attention
        if not is_1x1(ca.fc):
            return "its channel fc is not a 1x1 convolution"
        try:
            channel = dict(w1=matrix_of(ca.fc), b1=ca.fc.bias, act="identity",
                           channel_gate=gate_name(ca.act))
        except ValueError as e:
            return str(e)
        return combine(channel, spatial_parts(sa.cv1, sa.act),
                       channel_pool="avg", spatial_input="mean_max", first_max=True)


class UltralyticsSpatialAttention(ConvBlockAttention, ref.UltralyticsSpatialAttention,
                                  flavour="ultralytics_spatial"):
    """Ultralytics ``SpatialAttention(kernel_size=7)`` alone: CBAM's spatial gate
    without a channel gate."""

    def probe_channels(self) -> int:
        return 6  # no channel-sized parameter: any channel count

    def gate_spec(self) -> Parts:
        return combine(dict(w1=None), spatial_parts(self.cv1, self.act),
                       channel_pool="none", spatial_input="mean_max", first_max=True)


class LinearCBAM(ConvBlockAttention, ref.LinearCBAM, flavour="seed_linear"):
    """Seed 001's ``CBAM(channel, ratio=16, kernel_size=7)`` (Linear MLP layers)."""

    def gate_spec(self) -> Parts:
        ca, sa = self.channel_attention, self.spatial_attention
        if not (isinstance(ca.fc, nn.Sequential) and len(ca.fc) == 3):
            return "its channel MLP is not Sequential(Linear, activation, Linear)"
        return combine(channel_parts(*ca.fc, ca.sigmoid), spatial_parts(sa.conv, sa.sigmoid),
                       channel_pool="avg_max", spatial_input="mean_max", first_max=True)


class ExternalCBAMBlock(ConvBlockAttention, ref.ExternalCBAMBlock, flavour="external"):
    """External-Attention-pytorch's ``CBAMBlock(channel=512, reduction=16,
    kernel_size=49)``, its residual ``out + x`` included (one more pass over x
    than the other flavours: the add is PyTorch's)."""

    def gate_spec(self) -> Parts:
        if not (isinstance(self.ca.se, nn.Sequential) and len(self.ca.se) == 3):
            return "its channel MLP is not Sequential(conv, activation, conv)"
        return combine(channel_parts(*self.ca.se, self.ca.sigmoid),
                       spatial_parts(self.sa.conv, self.sa.sigmoid),
                       channel_pool="avg_max", spatial_input="max_mean", first_max=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the reference fallback (super().forward of the upstream class) adds x itself
        return self.fused_forward(
            x, lambda x, **parts: F.convolutional_block_attention(x, **parts) + x)


cbam_block = CBAMBlock
