"""The drop-in GAM module: its reference class (same constructor,
submodules, state_dict keys) with the forward rewritten (see the family's
docstring). The ReLUs and the spatial branch's first three layers are
called as they are; the Linears, and in eval the last conv and BatchNorm,
are used by their parameters (a hook on them leaves the module alone)."""
from typing import Optional

import torch
from torch import nn

from .._core.modules import RoutedModule, uncalled_hooks_reason
from . import reference as ref
from .functional import folded_conv_bn, pixel_linear, shuffled_product

__all__ = ["GlobalAttention", "GAM_Attention", "GAM_AttentionGated", "GAM_AttentionYOLO"]


class GlobalAttention(RoutedModule):
    """Root of the drop-in GAM modules: the forward of every flavour (its
    reference class sets CHANNEL_SIGMOID and SHUFFLE_GROUPS)."""

    def gate_spec(self):
        """{} when the forward can be rewritten, else the reason (convert's check)."""
        lin1, _, lin2 = self.channel_attention
        conv, bn = self.spatial_attention[3], self.spatial_attention[4]
        if not (isinstance(lin1, nn.Linear) and isinstance(lin2, nn.Linear)):
            return "its channel attention is not Linear, act, Linear"
        if not (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d):
            return "its spatial attention does not end with Conv2d, BatchNorm2d"
        return uncalled_hooks_reason({
            "channel_attention.0": lin1, "channel_attention.2": lin2,
            "spatial_attention.3": conv, "spatial_attention.4": bn}) or {}

    def probe_channels(self) -> Optional[int]:
        return self.channel_attention[0].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin1, act, lin2 = self.channel_attention
        att = pixel_linear(act(pixel_linear(x, lin1.weight, lin1.bias)), lin2.weight, lin2.bias)
        x = x * (att.sigmoid() if self.CHANNEL_SIGMOID else att)
        first = self.spatial_attention[:3]
        conv, bn = self.spatial_attention[3], self.spatial_attention[4]
        hidden = first(x)
        if bn.training or bn.running_mean is None:  # batch statistics: the module itself
            logits = bn(conv(hidden))
        else:
            logits = folded_conv_bn(hidden, conv, bn)
        if self.SHUFFLE_GROUPS:
            return shuffled_product(x, logits.sigmoid(), self.SHUFFLE_GROUPS)
        return x * logits.sigmoid()


class GAM_Attention(GlobalAttention, ref.GAM_Attention):
    """Seed 000's ``GAM_Attention(in_channels, out_channels, rate=4)``."""


class GAM_AttentionGated(GlobalAttention, ref.GAM_AttentionGated):
    """The widely copied ``GAM_Attention(in_channels, out_channels=None, rate=4)``
    (a sigmoid on the channel attention)."""


class GAM_AttentionYOLO(GlobalAttention, ref.GAM_AttentionYOLO):
    """The YOLO repositories' ``GAM_Attention(c1, c2, group=True, rate=4)``."""
