"""Triplet Attention in pure PyTorch: the flavours in use, with their upstream semantics.

These classes are the oracle for tests (run in float64) and what
``attnkernels.convert`` recognises. Triplet attention has three branches; each
rotates x so that one axis becomes the "channel" axis, pools it to [max, mean]
(``ZPool``, max first, ``torch.max(dim)``: a max's gradient goes to the first
maximal element), convolves the 2-channel map with a kxk conv (no bias) +
BatchNorm2d(1, eps=1e-5, momentum=0.01), gates it with a sigmoid and
multiplies the rotated x by it:

  * ``cw``: pooled over H, conv over the (C, W) plane, gate s_cw[n, c, w];
  * ``hc``: pooled over W, conv over the (H, C) plane (H the rows, C the
    columns: the transpose of the (C, H) map), gate s_hc[n, c, h];
  * ``hw``: pooled over C, conv over (H, W), gate s_hw[n, h, w];

and ``y = (x s_hw + x s_cw + x s_hc) / 3``, or ``(x s_cw + x s_hc) / 2`` with
``no_spatial``.

Flavours (state_dict keys in brackets):
  * ``TripletAttention``       landskape-ai/triplet-attention ``triplet_attention.py``
                               ``TripletAttention(no_spatial=False)``, also the seeds'
                               copy [cw.conv.conv.weight, cw.conv.bn.*, hc.*, hw.*]
  * ``LegacyTripletAttention`` the repository's older ``MODELS/triplet_attention.py``
                               ``TripletAttention(gate_channels, reduction_ratio=16,
                               pool_types=['avg', 'max'], no_spatial=False)`` (the
                               arguments but no_spatial are unused)
                               [ChannelGateH.spatial.conv.weight, ChannelGateH.spatial.bn.*,
                               ChannelGateW.*, SpatialGate.*]

Upstream hard-codes kernel_size = 7; the released k=3 weights come from a copy
edited to 3. Both classes take ``kernel_size=7`` as an extra keyword for them.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..cbam.reference import BasicConv, SpatialGate

__all__ = ["triplet_attention", "TripletAttention", "LegacyTripletAttention"]


class ZPool(nn.Module):
    def forward(self, x):
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class AttentionGate(nn.Module):
    def __init__(self, kernel_size=7):
        super().__init__()
        self.compress = ZPool()
        self.conv = BasicConv(2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2,
                              relu=False)

    def forward(self, x):
        return x * torch.sigmoid_(self.conv(self.compress(x)))


def _triplet_forward(cw, hc, hw, x):
    """The upstream forward over the three branch gates (hw None: no_spatial)."""
    x_out11 = cw(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
    x_out21 = hc(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
    if hw is None:
        return 1 / 2 * (x_out11 + x_out21)
    return 1 / 3 * (hw(x) + x_out11 + x_out21)


class TripletAttention(nn.Module):
    """The official ``TripletAttention(no_spatial=False)`` (branches cw, hc, hw)."""

    def __init__(self, no_spatial=False, kernel_size=7):
        super().__init__()
        self.cw = AttentionGate(kernel_size)
        self.hc = AttentionGate(kernel_size)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.hw = AttentionGate(kernel_size)

    def forward(self, x):
        return _triplet_forward(self.cw, self.hc, None if self.no_spatial else self.hw, x)


class LegacyTripletAttention(nn.Module):
    """The older ``TripletAttention(gate_channels, reduction_ratio=16, pool_types=['avg',
    'max'], no_spatial=False)`` (branches ChannelGateH, ChannelGateW, SpatialGate)."""

    def __init__(self, gate_channels, reduction_ratio=16, pool_types=("avg", "max"),
                 no_spatial=False, kernel_size=7):
        super().__init__()
        self.ChannelGateH = SpatialGate(kernel_size)
        self.ChannelGateW = SpatialGate(kernel_size)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = SpatialGate(kernel_size)

    def forward(self, x):
        return _triplet_forward(self.ChannelGateH, self.ChannelGateW,
                                None if self.no_spatial else self.SpatialGate, x)


# ---------------------------------------------------------------- functional

def triplet_attention(x, conv_weights, conv_biases=None, *, bn=False, bn_weights=None,
                      bn_biases=None, running_means=None, running_vars=None, training=False,
                      momentum=0.01, eps=1e-5, no_spatial=False):
    """Pure-PyTorch triplet attention, as upstream computes it (rotate, ZPool,
    conv, BatchNorm, sigmoid, rotate back). Arguments as
    ``attnkernels.functional.triplet_attention``: per-branch sequences in the
    order (cw, hc, hw); BatchNorm updates the running statistics in place in
    training mode, as F.batch_norm does."""
    branches = 2 if no_spatial else 3
    none = [None] * branches

    def seq(v):
        return none if v is None else list(v)

    biases, bn_w, bn_b = seq(conv_biases), seq(bn_weights), seq(bn_biases)
    r_mean, r_var = seq(running_means), seq(running_vars)
    moms = list(momentum) if isinstance(momentum, (list, tuple)) else [momentum] * branches

    def gate(i):
        def run(t):
            k = conv_weights[i].shape[-1]
            q = F.conv2d(ZPool()(t), conv_weights[i], biases[i], padding=(k - 1) // 2)
            if bn:
                q = F.batch_norm(q, r_mean[i], r_var[i], bn_w[i], bn_b[i], training, moms[i], eps)
            return t * torch.sigmoid(q)
        return run

    return _triplet_forward(gate(0), gate(1), None if no_spatial else gate(2), x)
