"""Squeeze-and-Excitation in pure PyTorch: every flavour in use, as written upstream.

These classes are the oracle for tests (run in float64) and what
``attnkernels.convert`` recognises; ``squeeze_excite`` is the functional
fallback the fused backends must agree with.

Flavours:
  * ``SELayer``              the copy-pasted blog version (seeds: SELayer, se_block,
                              SEAttention, SENet): Linear without bias, ReLU, Sigmoid;
                              keys ``fc.0.weight``, ``fc.2.weight``.
  * ``SqueezeExcitation``    torchvision.ops: 1x1 convs with bias, ``activation``,
                              ``scale_activation``; keys ``fc1.*``, ``fc2.*``.
  * ``SEModule``             timm.layers: rd_ratio/rd_channels/rd_divisor, bias,
                              add_maxpool, norm_layer, gate; keys ``fc1``, ``bn``, ``fc2``.
  * ``EfficientNetSqueezeExcite``  timm EfficientNet blocks' ``SqueezeExcite``;
                              keys ``conv_reduce``, ``conv_expand``.
  * ``EffectiveSEModule``    timm: a single C->C conv and hard_sigmoid; key ``fc``.
  * ``LegacySEModule``       the original SENet's (timm ``legacy_seresnet*`` / ``senet154``,
                              Cadene's pretrainedmodels): ``(channels, reduction)``, 1x1 convs
                              with bias, ReLU, Sigmoid; keys ``fc1.*``, ``fc2.*``.

The timm flavours take timm's ``device`` and ``dtype`` keywords too.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._core.layers import activation, gate, make_act_layer, make_divisible, place

__all__ = ["squeeze_excite", "SELayer", "SqueezeExcitation", "SEModule", "EfficientNetSqueezeExcite", "EffectiveSEModule", "LegacySEModule"]


def squeeze_excite(x: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor] = None,
                   w2: Optional[torch.Tensor] = None, b2: Optional[torch.Tensor] = None,
                   pool: str = "avg", act: str = "relu", gate_fn: str = "sigmoid") -> torch.Tensor:
    """y = x * gate(W2 act(W1 pool(x) + b1) + b2); one layer when ``w2`` is None.

    ``pool`` is ``"avg"`` or ``"avg_max"`` (timm's add_maxpool: 0.5*mean + 0.5*max).
    Weights are 2-D: ``w1`` (R, C), ``w2`` (C, R)."""
    s = x.mean((2, 3))
    if pool == "avg_max":
        s = 0.5 * s + 0.5 * x.amax((2, 3))
    elif pool != "avg":
        raise ValueError(f"pool must be 'avg' or 'avg_max', got {pool!r}")
    z = F.linear(s, w1, b1)
    if w2 is not None:
        z = F.linear(activation(z, act), w2, b2)
    g = gate(z, gate_fn)
    return x * g[:, :, None, None]


class SELayer(nn.Module):
    """The blog/seed SE (``SELayer``, ``se_block``, ``SEAttention``, ``SENet``)."""

    def __init__(self, channel: int = 512, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation."""

    def __init__(self, input_channels: int, squeeze_channels: int,
                 activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, input):
        scale = self.avgpool(input)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, input):
        scale = self._scale(input)
        return scale * input


def timm_pool(x, add_maxpool):
    """timm's squeeze: the spatial mean, or with add_maxpool 0.5 * mean + 0.5 * max."""
    x_se = x.mean((2, 3), keepdim=True)
    if add_maxpool:
        x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
    return x_se


class SEModule(nn.Module):
    """timm.layers.squeeze_excite.SEModule (also exported as timm's SqueezeExcite)."""

    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, rd_divisor=8,
                 add_maxpool=False, bias=True, act_layer=nn.ReLU, norm_layer=None,
                 gate_layer="sigmoid", device=None, dtype=None):
        super().__init__()
        self.add_maxpool = add_maxpool
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias)
        self.bn = norm_layer(rd_channels) if norm_layer else nn.Identity()
        self.act = make_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias)
        self.gate = make_act_layer(gate_layer)
        place(self, device, dtype)

    def forward(self, x):
        x_se = timm_pool(x, self.add_maxpool)
        x_se = self.fc1(x_se)
        x_se = self.act(self.bn(x_se))
        x_se = self.fc2(x_se)
        return x * self.gate(x_se)


class EfficientNetSqueezeExcite(nn.Module):
    """timm.models._efficientnet_blocks.SqueezeExcite."""

    def __init__(self, in_chs, rd_ratio=0.25, rd_channels=None, act_layer=nn.ReLU,
                 gate_layer=nn.Sigmoid, force_act_layer=None, rd_round_fn=None, device=None,
                 dtype=None):
        super().__init__()
        if rd_channels is None:
            rd_round_fn = rd_round_fn or round
            rd_channels = rd_round_fn(in_chs * rd_ratio)
        act_layer = force_act_layer or act_layer
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
        self.act1 = make_act_layer(act_layer, inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)
        self.gate = make_act_layer(gate_layer)
        place(self, device, dtype)

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_reduce(x_se)
        x_se = self.act1(x_se)
        x_se = self.conv_expand(x_se)
        return x * self.gate(x_se)


class EffectiveSEModule(nn.Module):
    """timm.layers.squeeze_excite.EffectiveSEModule (CenterMask's eSE)."""

    def __init__(self, channels, add_maxpool=False, gate_layer="hard_sigmoid", device=None,
                 dtype=None, **_):
        super().__init__()
        self.add_maxpool = add_maxpool
        self.fc = nn.Conv2d(channels, channels, kernel_size=1, padding=0)
        self.gate = make_act_layer(gate_layer)
        place(self, device, dtype)

    def forward(self, x):
        x_se = timm_pool(x, self.add_maxpool)
        x_se = self.fc(x_se)
        return x * self.gate(x_se)


class LegacySEModule(nn.Module):
    """The original SENet's SEModule, as timm.models.senet has it (legacy_seresnet*,
    senet154). Cadene's pretrainedmodels copy also holds an ``avg_pool`` child,
    which carries no weights; ``convert`` takes both."""

    def __init__(self, channels: int, reduction: int, device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1)
        self.sigmoid = nn.Sigmoid()
        place(self, device, dtype)

    def forward(self, x):
        module_input = x
        x = x.mean((2, 3), keepdim=True)
        x = self.fc1(x)
        x = self.relu(x)
        x = self.fc2(x)
        x = self.sigmoid(x)
        return module_input * x


# The seeds' other names for the same class.
se_block = SELayer
SEAttention = SELayer
