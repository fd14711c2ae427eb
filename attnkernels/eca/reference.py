"""Efficient Channel Attention in pure PyTorch: every flavour in use, as written upstream.

These classes are the oracle for tests (run in float64) and what
``attnkernels.convert`` recognises; ``efficient_channel_attention`` is the
functional fallback the fused backends must agree with.

Flavours:
  * ``ECALayer``       the official ``eca_layer(channel, k_size=3)`` (BangguWu/ECANet):
                        Conv1d(1, 1, k) without bias; ``channel`` is unused; key ``conv.weight``.
  * ``ECABlock``       the seeds' ``eca_block(channel, b=1, gamma=2)``: k from the
                        channel count, Conv1d without bias; key ``conv.weight``.
  * ``ECAAttention``   the seeds' ``ECAAttention(kernel_size=3)``: Conv1d with bias;
                        keys ``conv.weight``, ``conv.bias``.
  * ``EcaModule``      timm: k from ``channels`` (gamma, beta) overrides kernel_size;
                        optional ``use_mlp`` (a timm experiment); gate_layer.
  * ``CecaModule``     timm: circular padding over channels; the conv has a bias
                        when act_layer is given, and the activation is never applied.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._core.layers import gate, make_act_layer, make_divisible

__all__ = ["efficient_channel_attention", "ECALayer", "ECABlock", "ECAAttention", "EcaModule", "CecaModule"]


def efficient_channel_attention(x: torch.Tensor, weight: torch.Tensor,
                                bias: Optional[torch.Tensor] = None, circular: bool = False,
                                gate_fn: str = "sigmoid") -> torch.Tensor:
    """y = x * gate(conv1d(mean_hw(x) over channels, weight (k,), bias (1,))), with
    zero or circular padding of (k - 1) // 2 channels on each side."""
    k = weight.shape[-1]
    pad = (k - 1) // 2
    s = x.mean((2, 3))[:, None]  # (B, 1, C)
    s = F.pad(s, (pad, pad), mode="circular" if circular else "constant")
    z = F.conv1d(s, weight.reshape(1, 1, k), bias)[:, 0]
    return x * gate(z, gate_fn)[:, :, None, None]


def kernel_size_for(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """timm's adaptive kernel size: odd, at least 3."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class ECALayer(nn.Module):
    """The official ``eca_layer(channel, k_size=3)``."""

    def __init__(self, channel, k_size=3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        y = self.sigmoid(y)
        return x * y.expand_as(x)


class ECABlock(ECALayer):
    """The seeds' ``eca_block(channel, b=1, gamma=2)``: the official layer (the same
    submodules and forward) with its kernel size from the channels."""

    def __init__(self, channel, b=1, gamma=2):
        kernel_size = int(abs((math.log(channel, 2) + b) / gamma))
        super().__init__(channel, kernel_size if kernel_size % 2 else kernel_size + 1)


class ECAAttention(nn.Module):
    """The seeds' ``ECAAttention(kernel_size=3)`` (Conv1d with bias)."""

    def __init__(self, kernel_size=3):
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.gap(x)
        y = y.squeeze(-1).permute(0, 2, 1)
        y = self.conv(y)
        y = self.sigmoid(y)
        y = y.permute(0, 2, 1).unsqueeze(-1)
        return x * y.expand_as(x)


class EcaModule(nn.Module):
    """timm.layers.eca.EcaModule (alias EfficientChannelAttn)."""

    def __init__(self, channels=None, kernel_size=3, gamma=2, beta=1, act_layer=None,
                 gate_layer="sigmoid", rd_ratio=1 / 8, rd_channels=None, rd_divisor=8,
                 use_mlp=False, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if channels is not None:
            kernel_size = kernel_size_for(channels, gamma, beta)
        assert kernel_size % 2 == 1
        padding = (kernel_size - 1) // 2
        if use_mlp:
            assert channels is not None
            if rd_channels is None:
                rd_channels = make_divisible(channels * rd_ratio, divisor=rd_divisor)
            act_layer = act_layer or nn.ReLU
            self.conv = nn.Conv1d(1, rd_channels, kernel_size=1, padding=0, bias=True, **dd)
            self.act = make_act_layer(act_layer)
            self.conv2 = nn.Conv1d(rd_channels, 1, kernel_size=kernel_size, padding=padding,
                                   bias=True, **dd)
        else:
            self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=padding, bias=False, **dd)
            self.act = None
            self.conv2 = None
        self.gate = make_act_layer(gate_layer)

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.conv(y)
        if self.conv2 is not None:
            y = self.act(y)
            y = self.conv2(y)
        y = self.gate(y).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


class CecaModule(nn.Module):
    """timm.layers.eca.CecaModule (alias CircularEfficientChannelAttn)."""

    def __init__(self, channels=None, kernel_size=3, gamma=2, beta=1, act_layer=None,
                 gate_layer="sigmoid", device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if channels is not None:
            kernel_size = kernel_size_for(channels, gamma, beta)
        has_act = act_layer is not None
        assert kernel_size % 2 == 1
        self.padding = (kernel_size - 1) // 2
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=0, bias=has_act, **dd)
        self.gate = make_act_layer(gate_layer)

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = F.pad(y, (self.padding, self.padding), mode="circular")
        y = self.conv(y)
        y = self.gate(y).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


# Upstream's other names for the same classes.
eca_layer = ECALayer
eca_block = ECABlock
EfficientChannelAttn = EcaModule
CircularEfficientChannelAttn = CecaModule
