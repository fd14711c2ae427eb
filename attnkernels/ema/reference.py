"""EMA in pure PyTorch: every flavour in use, as written upstream.

These classes are the oracle for tests (run in float64) and what
``attnkernels.convert`` recognises; ``efficient_multiscale_attention`` is the
functional fallback the fused backends must agree with.

With G groups (``factor``) of g = C / G channels, each group's x_g (g, H, W):
    a = conv1x1(concat(mean_w x_g, mean_h x_g))     (g, H + W): a_h | a_w
    x1 = GroupNorm_g(x_g * sigmoid(a_h) * sigmoid(a_w))   (one group per channel)
    x2 = conv3x3(x_g)
    w = softmax_c(mean_hw x1) . x2 + softmax_c(mean_hw x2) . x1    (H, W)
    out_g = x_g * sigmoid(w)
The 1x1 and 3x3 convolutions and the GroupNorm's affine are shared by all
groups (they act on the (B * G, g, H, W) view).

Flavours (same submodules, keys and forward; the constructors differ):
  * ``EMA``      the official ``EMA(channels, c2=None, factor=32)``
                 (YOLOonMe/EMA-attention-module); ``c2`` is unused.
  * ``EMASeed``  seed 001's ``EMA(channels, factor=32)``, the form most YOLO
                 codebases copy (often with ``factor=8``).
"""
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["efficient_multiscale_attention", "EMA", "EMASeed"]


def efficient_multiscale_attention(x: torch.Tensor, x2: torch.Tensor, conv1x1_weight: torch.Tensor,
                                   conv1x1_bias, gn_weight, gn_bias, groups: int,
                                   eps: float = 1e-5) -> torch.Tensor:
    """EMA's attention given its 3x3 branch ``x2 = conv3x3(x.reshape(B * groups,
    C // groups, H, W))``: upstream's forward from there, op for op."""
    b, c, h, w = x.size()
    group_x = x.reshape(b * groups, -1, h, w)
    x_h = group_x.mean(3, keepdim=True)
    x_w = group_x.mean(2, keepdim=True).permute(0, 1, 3, 2)
    hw = F.conv2d(torch.cat([x_h, x_w], dim=2), conv1x1_weight, conv1x1_bias)
    x_h, x_w = torch.split(hw, [h, w], dim=2)
    x1 = F.group_norm(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid(),
                      group_x.shape[1], gn_weight, gn_bias, eps)
    x11 = torch.softmax(x1.mean((2, 3)).reshape(b * groups, -1, 1).permute(0, 2, 1), -1)
    x12 = x2.reshape(b * groups, c // groups, -1)
    x21 = torch.softmax(x2.mean((2, 3)).reshape(b * groups, -1, 1).permute(0, 2, 1), -1)
    x22 = x1.reshape(b * groups, c // groups, -1)
    weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * groups, 1, h, w)
    return (group_x * weights.sigmoid()).reshape(b, c, h, w)


class EMA(nn.Module):
    """The official ``EMA(channels, c2=None, factor=32)``."""

    def __init__(self, channels, c2=None, factor=32):
        super().__init__()
        self.groups = factor
        assert channels // self.groups > 0
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(channels // self.groups, channels // self.groups)
        self.conv1x1 = nn.Conv2d(channels // self.groups, channels // self.groups, kernel_size=1,
                                 stride=1, padding=0)
        self.conv3x3 = nn.Conv2d(channels // self.groups, channels // self.groups, kernel_size=3,
                                 stride=1, padding=1)

    def forward(self, x):
        b, c, h, w = x.size()
        group_x = x.reshape(b * self.groups, -1, h, w)
        x_h = self.pool_h(group_x)
        x_w = self.pool_w(group_x).permute(0, 1, 3, 2)
        hw = self.conv1x1(torch.cat([x_h, x_w], dim=2))
        x_h, x_w = torch.split(hw, [h, w], dim=2)
        x1 = self.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
        x2 = self.conv3x3(group_x)
        x11 = self.softmax(self.agp(x1).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x12 = x2.reshape(b * self.groups, c // self.groups, -1)
        x21 = self.softmax(self.agp(x2).reshape(b * self.groups, -1, 1).permute(0, 2, 1))
        x22 = x1.reshape(b * self.groups, c // self.groups, -1)
        weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(
            b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)


class EMASeed(EMA):
    """Seed 001's ``EMA(channels, factor=32)``: the official module without ``c2``."""

    def __init__(self, channels, factor=32):
        super().__init__(channels, factor=factor)
