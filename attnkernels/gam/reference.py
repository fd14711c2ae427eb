"""GAM in pure PyTorch: the oracle of the tests and the class ``convert``
recognises by structure.

  * ``GAM_Attention(in_channels, out_channels, rate=4)`` (seed 000): the
    channel attention is an MLP (Linear C -> C/rate, ReLU, Linear back) over
    each pixel's channels (x permuted to (B, H*W, C)), multiplied into x
    without a gate; the spatial attention is 7x7 conv -> BN -> ReLU -> 7x7
    conv -> BN, through a sigmoid, multiplied into that product."""
from torch import nn

__all__ = ["GAM_Attention"]


class GAM_Attention(nn.Module):
    """Seed 000's ``GAM_Attention(in_channels, out_channels, rate=4)``."""

    def __init__(self, in_channels, out_channels, rate=4):
        super().__init__()
        hidden = int(in_channels / rate)
        self.channel_attention = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, in_channels))
        self.spatial_attention = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=7, padding=3),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, kernel_size=7, padding=3),
            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        b, c, h, w = x.shape
        x_permute = x.permute(0, 2, 3, 1).view(b, -1, c)
        x_att_permute = self.channel_attention(x_permute).view(b, h, w, c)
        x_channel_att = x_att_permute.permute(0, 3, 1, 2)
        x = x * x_channel_att
        x_spatial_att = self.spatial_attention(x).sigmoid()
        return x * x_spatial_att
