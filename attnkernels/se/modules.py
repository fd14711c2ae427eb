"""Drop-in Squeeze-and-Excitation modules.

Each flavour is its reference class with the fused ``forward`` (see
``attnkernels._core.modules.FusedFamily``).
``SqueezeExcite(..., flavour=...)`` builds any of them::

    SqueezeExcite(256)                                   # timm SEModule
    SqueezeExcite(256, 16, flavour="seed")               # SELayer / se_block / SEAttention
    SqueezeExcite(256, 64, flavour="torchvision")        # torchvision.ops.SqueezeExcitation
    SqueezeExcite(256, flavour="timm_efficientnet")      # timm EfficientNet SqueezeExcite
    SqueezeExcite(256, flavour="timm_effective")         # timm EffectiveSEModule
    SqueezeExcite(256, 16, flavour="senet")              # the original SENet's (timm legacy_seresnet*)
    SqueezeExcite(256, flavour="ultralytics")            # Ultralytics ChannelAttention
"""
from typing import Tuple, Union

import torch
from torch import nn

from . import functional as F
from ..cbam import reference as ref_cbam
from . import reference as ref
from .._core.layers import activation_name, gate_name
from .._core.modules import FusedFamily

__all__ = ["SqueezeExcite", "SELayer", "SqueezeExcitation", "SEModule", "EfficientNetSqueezeExcite", "EffectiveSEModule", "LegacySEModule", "UltralyticsChannelAttention"]

# (w1, b1, w2, b2, pool, act, gate) for the functional, or the reason the
# module's configuration has no fused kernel.
Spec = Union[Tuple, str]


def _fold_batchnorm(bn: nn.BatchNorm2d, w, b):
    """Eval-mode BatchNorm folded into the preceding 1x1 conv; differentiable in
    the conv's and the BN's affine parameters."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    w = w * scale[:, None].to(w.dtype)
    b = shift.to(w.dtype) if b is None else b * scale.to(b.dtype) + shift.to(b.dtype)
    return w, b


def _names(act_layer, gate_layer):
    try:
        return activation_name(act_layer), gate_name(gate_layer)
    except ValueError as e:
        return str(e)


class SqueezeExcite(FusedFamily):
    """Fused Squeeze-and-Excitation; ``flavour`` picks whose constructor and keys."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "SE", {}, "timm"
    ADOPTED_ATTRS = ("add_maxpool",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.gate_spec()
        if isinstance(spec, str):
            return self.reference_forward(x, spec)
        w1, b1, w2, b2, pool, act, gate = spec
        return F.squeeze_excite(x, w1, b1, w2, b2, pool=pool, act=act, gate=gate,
                                backend=self.backend)


def _conv_w(conv: nn.Conv2d):
    return conv.weight.flatten(1)


class SELayer(SqueezeExcite, ref.SELayer, flavour="seed"):
    """The seeds' SELayer / se_block / SEAttention: ``(channel, reduction=16)``."""

    def gate_spec(self) -> Spec:
        fc1, act, fc2, gate = self.fc
        names = _names(act, gate)
        if isinstance(names, str):
            return names
        return fc1.weight, fc1.bias, fc2.weight, fc2.bias, "avg", *names


class SqueezeExcitation(SqueezeExcite, ref.SqueezeExcitation, flavour="torchvision"):
    """torchvision.ops.SqueezeExcitation: ``(input_channels, squeeze_channels, activation, scale_activation)``."""

    def gate_spec(self) -> Spec:
        names = _names(self.activation, self.scale_activation)
        if isinstance(names, str):
            return names
        return _conv_w(self.fc1), self.fc1.bias, _conv_w(self.fc2), self.fc2.bias, "avg", *names


class SEModule(SqueezeExcite, ref.SEModule, flavour="timm"):
    """timm SEModule: ``(channels, rd_ratio, rd_channels, rd_divisor, add_maxpool, bias, act_layer, norm_layer, gate_layer)``."""

    def gate_spec(self) -> Spec:
        names = _names(self.act, self.gate)
        if isinstance(names, str):
            return names
        w1, b1 = _conv_w(self.fc1), self.fc1.bias
        if isinstance(self.bn, nn.BatchNorm2d) and not self.bn.training \
                and self.bn.running_mean is not None:
            w1, b1 = _fold_batchnorm(self.bn, w1, b1)
        elif not isinstance(self.bn, nn.Identity):
            return (f"the gate's norm layer {type(self.bn).__name__} in "
                    f"{'training' if self.bn.training else 'eval'} mode has no fused kernel")
        pool = "avg_max" if self.add_maxpool else "avg"
        return w1, b1, _conv_w(self.fc2), self.fc2.bias, pool, *names


class EfficientNetSqueezeExcite(SqueezeExcite, ref.EfficientNetSqueezeExcite,
                                flavour="timm_efficientnet"):
    """timm EfficientNet-block SqueezeExcite: ``(in_chs, rd_ratio=0.25, rd_channels, act_layer, gate_layer, ...)``."""

    def gate_spec(self) -> Spec:
        names = _names(self.act1, self.gate)
        if isinstance(names, str):
            return names
        return (_conv_w(self.conv_reduce), self.conv_reduce.bias, _conv_w(self.conv_expand),
                self.conv_expand.bias, "avg", *names)


class EffectiveSEModule(SqueezeExcite, ref.EffectiveSEModule, flavour="timm_effective"):
    """timm EffectiveSEModule: ``(channels, add_maxpool=False, gate_layer='hard_sigmoid')``."""

    def gate_spec(self) -> Spec:
        names = _names(None, self.gate)
        if isinstance(names, str):
            return names
        pool = "avg_max" if self.add_maxpool else "avg"
        return _conv_w(self.fc), self.fc.bias, None, None, pool, *names


class LegacySEModule(SqueezeExcite, ref.LegacySEModule, flavour="senet"):
    """The original SENet's SEModule (timm ``legacy_seresnet*``): ``(channels, reduction)``."""

    def gate_spec(self) -> Spec:
        names = _names(self.relu, self.sigmoid)
        if isinstance(names, str):
            return names
        return _conv_w(self.fc1), self.fc1.bias, _conv_w(self.fc2), self.fc2.bias, "avg", *names


class UltralyticsChannelAttention(SqueezeExcite, ref_cbam.UltralyticsChannelAttention,
                                  flavour="ultralytics"):
    """Ultralytics ``ChannelAttention(channels)`` on its own (YOLO configs): one
    C -> C 1x1 conv with bias on the mean, a sigmoid gate (an effective SE)."""

    def gate_spec(self) -> Spec:
        names = _names(None, self.act)
        if isinstance(names, str):
            return names
        return _conv_w(self.fc), self.fc.bias, None, None, "avg", *names
