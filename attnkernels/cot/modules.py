"""The drop-in CoT module: its reference class (same constructor,
submodules, state_dict keys) with the forward rewritten (see the family's
docstring); every submodule but the last 1x1 conv is called as it is (their
hooks run).

    ContextualAttention(512, 3)   # External-Attention-pytorch CoTAttention(dim, kernel_size)
"""
import torch
from torch import nn

from .._core.modules import FusedFamily, uncalled_hooks_reason
from . import reference as ref
from .functional import averaged_conv1x1, cot_softmax_gate

__all__ = ["ContextualAttention", "CoTAttention"]


class ContextualAttention(FusedFamily):
    """Fused CoT attention; ``flavour`` picks whose constructor."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "CoT attention", {}, "external"
    ADOPTED_ATTRS = ("dim", "kernel_size")
    CALLS_SUBMODULES = True  # convert takes it with hooks on the submodules it calls

    def gate_spec(self):
        """{} when the forward can be rewritten, else the reason (convert's check)."""
        last = self.attention_embed[-1]
        if not isinstance(last, nn.Conv2d) or last.kernel_size != (1, 1) or last.groups != 1 \
                or last.stride != (1, 1) or last.padding != (0, 0):
            return "its attention_embed does not end with a plain 1x1 Conv2d"
        return uncalled_hooks_reason({f"attention_embed.{len(self.attention_embed) - 1}":
                                      last}) or {}

    def probe_channels(self):
        return self.dim


class CoTAttention(ContextualAttention, ref.CoTAttention, flavour="external"):
    """External-Attention-pytorch ``CoTAttention(dim=512, kernel_size=3)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        why = self.gate_spec()
        if isinstance(why, str):
            return self.reference_forward(x, why)
        k1 = self.key_embed(x)
        v = self.value_embed(x)
        hidden = self.attention_embed[:-1](torch.cat([k1, x], dim=1))
        last = self.attention_embed[-1]
        att = averaged_conv1x1(hidden, last.weight, last.bias, self.kernel_size ** 2)
        return cot_softmax_gate(att, v, k1, backend=self.backend)
