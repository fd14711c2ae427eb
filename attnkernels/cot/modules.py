"""The drop-in CoT module: its reference class (same constructor,
submodules, state_dict keys) with the forward rewritten (see the family's
docstring); every submodule but the last 1x1 conv is called as it is."""
from typing import Optional, Tuple

import torch
from torch import nn

from .._core.modules import RoutedModule
from . import reference as ref
from .functional import averaged_conv1x1, softmax_gate

__all__ = ["ContextualAttention", "CoTAttention"]


class ContextualAttention(RoutedModule):
    """Root of the drop-in CoT modules."""

    ADOPTED_ATTRS: Tuple[str, ...] = ("dim", "kernel_size")

    def gate_spec(self):
        """{} when the forward can be rewritten, else the reason (convert's check)."""
        last = self.attention_embed[-1]
        if not isinstance(last, nn.Conv2d) or last.kernel_size != (1, 1) or last.groups != 1 \
                or last.stride != (1, 1) or last.padding != (0, 0):
            return "its attention_embed does not end with a plain 1x1 Conv2d"
        return self.uncalled_hooks_reason({f"attention_embed.{len(self.attention_embed) - 1}":
                                           last}) or {}

    def probe_channels(self) -> Optional[int]:
        return self.dim


class CoTAttention(ContextualAttention, ref.CoTAttention):
    """External-Attention-pytorch ``CoTAttention(dim=512, kernel_size=3)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k1 = self.key_embed(x)
        v = self.value_embed(x)
        hidden = self.attention_embed[:-1](torch.cat([k1, x], dim=1))
        last = self.attention_embed[-1]
        att = averaged_conv1x1(hidden, last.weight, last.bias, self.kernel_size ** 2)
        return softmax_gate(att, v, k1)
