"""Drop-in Selective Kernel modules.

Each flavour is its reference class with the fused ``forward``: the branch
convolutions and the gate network run as upstream (library ops), the pool
and the softmax-weighted sum of the branches fused (``functional.selective_kernel``).
``SelectiveKernelAttention(..., flavour=...)`` builds either::

    SelectiveKernelAttention(64)                  # seed SKAttention(channel=64, ...)
    SelectiveKernelAttention(64, flavour="timm")  # timm SelectiveKernel(64, ...)
"""
from typing import List

import torch
from torch import nn

from . import functional as F
from . import reference as ref
from .._core.modules import FusedFamily

__all__ = ["SelectiveKernelAttention", "SKAttention", "SelectiveKernel"]


class SelectiveKernelAttention(FusedFamily):
    """Fused Selective Kernel attention; ``flavour`` picks whose constructor."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "Selective Kernel", {}, "seed"

    def branches(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The branch outputs, as upstream computes them."""
        raise NotImplementedError

    def gate(self, s: torch.Tensor) -> torch.Tensor:
        """The gate network: s (B, C) -> logits (B, K, C)."""
        raise NotImplementedError

    def gate_spec(self):
        return {}  # any gate network: it runs as upstream's, between the fused passes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # branches the fused passes cannot take run the reference there (functional)
        return F.selective_kernel(self.branches(x), self.gate, backend=self.backend)


class SKAttention(SelectiveKernelAttention, ref.SKAttention, flavour="seed"):
    """Seed 002's ``SKAttention(channel=512, kernels=[1, 3, 5, 7], reduction=8, group=1, L=32)``."""

    def probe_channels(self):
        return self.fc.in_features if isinstance(self.fc, nn.Linear) else None

    def branches(self, x):
        return [conv(x) for conv in self.convs]

    def gate(self, s):
        z = self.fc(s)
        return torch.stack([fc(z) for fc in self.fcs], 1)


class SelectiveKernel(SelectiveKernelAttention, ref.SelectiveKernel, flavour="timm"):
    """timm's ``SelectiveKernel(in_channels, out_channels=None, kernel_size=None, ...)``."""

    ADOPTED_ATTRS = ("num_paths", "in_channels", "out_channels", "split_input")

    def probe_channels(self):
        return self.in_channels

    def branches(self, x):
        if self.split_input:
            parts = torch.split(x, self.in_channels // self.num_paths, 1)
            return [op(parts[i]) for i, op in enumerate(self.paths)]
        return [op(x) for op in self.paths]

    def gate(self, s):
        a = self.attn
        z = a.fc_select(a.act(a.bn(a.fc_reduce(s[:, :, None, None]))))
        return z.view(s.shape[0], self.num_paths, z.shape[1] // self.num_paths)
