"""Drop-in Triplet Attention modules.

Each flavour is its reference class with the fused ``forward`` (see
``attnkernels._core.modules.FusedFamily``).
``TripletAttentionModule(..., flavour=...)`` builds either::

    TripletAttentionModule()                            # official TripletAttention(no_spatial)
    TripletAttentionModule(256, flavour="legacy")       # MODELS/ TripletAttention(gate_channels, ...)
    TripletAttentionModule(kernel_size=3)               # the k=3 variant of the released weights

BatchNorm behaves as nn.BatchNorm2d does in each branch: batch statistics
and a running-statistics update in training mode (num_batches_tracked and
momentum=None included), the running statistics in eval mode.
"""
from typing import Dict, List, Union

from torch import nn

from . import functional as F
from . import reference as ref
from .._core.modules import FusedFamily, batch_norms_reason

__all__ = ["TripletAttentionModule", "TripletAttention", "LegacyTripletAttention"]

# keyword arguments of F.triplet_attention, or the reason the module's
# configuration has no fused kernel
Parts = Union[Dict, str]


def _branch_reason(basic: nn.Module) -> Union[str, None]:
    """Why a branch's BasicConv (conv, bn, relu) has no fused kernel (None: it has one)."""
    conv = basic.conv
    k = conv.kernel_size
    if not (isinstance(conv, nn.Conv2d) and conv.in_channels == 2 and conv.out_channels == 1
            and k[0] == k[1] and k[0] % 2 == 1 and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding == (k[0] // 2, k[0] // 2) and conv.padding_mode == "zeros"):
        return "its conv is not a same-padded, stride-1 2->1 conv with an odd square kernel"
    if basic.relu is not None:
        return "its BasicConv has a ReLU"
    return None


def triplet_parts(basics: List[nn.Module], no_spatial: bool) -> Parts:
    """The arguments of F.triplet_attention from the branches' BasicConvs (cw, hc[, hw])."""
    for basic in basics:
        why = _branch_reason(basic)
        if why:
            return why
    if len({b.conv.kernel_size for b in basics}) > 1:
        return "its branches have different kernel sizes"
    biases = [b.conv.bias for b in basics]
    parts = dict(conv_weights=[b.conv.weight for b in basics],
                 conv_biases=None if all(t is None for t in biases) else biases,
                 no_spatial=no_spatial)
    bns = [b.bn for b in basics]
    if all(bn is None for bn in bns):
        return parts
    why = batch_norms_reason(bns)
    return why if why else dict(parts, batch_norms=bns)


class TripletAttentionModule(FusedFamily):
    """Fused Triplet Attention; ``flavour`` picks whose constructor and keys."""

    FAMILY, FLAVOURS, DEFAULT_FLAVOUR = "Triplet Attention", {}, "official"
    ADOPTED_ATTRS = ("no_spatial",)

    def probe_channels(self) -> int:
        return 6  # any channel count works

    FUNCTIONAL = staticmethod(F.triplet_attention)


class TripletAttention(TripletAttentionModule, ref.TripletAttention, flavour="official"):
    """The official ``TripletAttention(no_spatial=False)`` (and the seeds' copy)."""

    def gate_spec(self) -> Parts:
        gates = [self.cw, self.hc] + ([] if self.no_spatial else [self.hw])
        return triplet_parts([g.conv for g in gates], self.no_spatial)


class LegacyTripletAttention(TripletAttentionModule, ref.LegacyTripletAttention, flavour="legacy"):
    """The older ``TripletAttention(gate_channels, reduction_ratio=16, pool_types=['avg',
    'max'], no_spatial=False)`` of ``MODELS/triplet_attention.py``."""

    def gate_spec(self) -> Parts:
        gates = [self.ChannelGateH, self.ChannelGateW] + ([] if self.no_spatial
                                                          else [self.SpatialGate])
        return triplet_parts([g.spatial for g in gates], self.no_spatial)
