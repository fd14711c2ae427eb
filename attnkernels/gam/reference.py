"""GAM in pure PyTorch: the oracle of the tests and the classes ``convert``
recognises by structure. Three flavours in use, alike in structure:

  * ``GAM_Attention(in_channels, out_channels, rate=4)`` (seed 000): the
    channel attention is an MLP (Linear C -> C/rate, ReLU, Linear back) over
    each pixel's channels (x permuted to (B, H*W, C)), multiplied into x
    without a gate; the spatial attention is 7x7 conv -> BN -> ReLU -> 7x7
    conv -> BN, through a sigmoid, multiplied into that product.
  * ``GAM_AttentionGated(in_channels, out_channels=None, rate=4)``: the GAM
    code copied through blogs and detection repositories (and the paper's
    M_c = sigmoid(MLP)): a sigmoid on the channel attention too; some copies
    take ``(in_channels, rate=4)`` only, the output width being the input's.
  * ``GAM_AttentionYOLO(c1, c2, group=True, rate=4)``: the YOLO repositories'
    copy: no channel gate, the 7x7 convs grouped (``groups=rate``) when
    ``group``, and the spatial attention channel-shuffled in 4 groups before
    the multiply."""
import torch
from torch import nn

__all__ = ["GAM_Attention", "GAM_AttentionGated", "GAM_AttentionYOLO", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The YOLO copies' shuffle: channel i * groups + j of the result is
    channel j * (C / groups) + i of x."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).contiguous().view(b, c, h, w)


class _GAM(nn.Module):
    """The shared structure and forward; a flavour sets how the channel
    attention is gated and whether the spatial one is shuffled."""

    CHANNEL_SIGMOID = False  # a sigmoid on the channel attention
    SHUFFLE_GROUPS = 0       # channel_shuffle of the spatial attention in this many groups

    def _build(self, in_channels, out_channels, rate, groups=1):
        hidden = int(in_channels / rate)
        self.channel_attention = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, in_channels))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=7, padding=3, groups=groups),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, kernel_size=7, padding=3, groups=groups),
            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        b, c, h, w = x.shape
        x_permute = x.permute(0, 2, 3, 1).view(b, -1, c)
        x_att_permute = self.channel_attention(x_permute).view(b, h, w, c)
        x_channel_att = x_att_permute.permute(0, 3, 1, 2)
        if self.CHANNEL_SIGMOID:
            x_channel_att = x_channel_att.sigmoid()
        x = x * x_channel_att
        x_spatial_att = self.spatial_attention(x).sigmoid()
        if self.SHUFFLE_GROUPS:
            x_spatial_att = channel_shuffle(x_spatial_att, self.SHUFFLE_GROUPS)
        return x * x_spatial_att


class GAM_Attention(_GAM):
    """Seed 000's ``GAM_Attention(in_channels, out_channels, rate=4)``."""

    def __init__(self, in_channels, out_channels, rate=4):
        super().__init__()
        self._build(in_channels, out_channels, rate)


class GAM_AttentionGated(_GAM):
    """The widely copied ``GAM_Attention(in_channels, out_channels=None, rate=4)``
    with a sigmoid on the channel attention."""

    CHANNEL_SIGMOID = True

    def __init__(self, in_channels, out_channels=None, rate=4):
        super().__init__()
        self._build(in_channels, in_channels if out_channels is None else out_channels, rate)


class GAM_AttentionYOLO(_GAM):
    """The YOLO repositories' ``GAM_Attention(c1, c2, group=True, rate=4)``:
    grouped 7x7 convs (``group``), the spatial attention shuffled in 4 groups."""

    SHUFFLE_GROUPS = 4

    def __init__(self, c1, c2, group=True, rate=4):
        super().__init__()
        self._build(c1, c2, rate, groups=rate if group else 1)
