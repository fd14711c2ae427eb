"""Dot-product attention of detection models, in pure PyTorch: the oracle of
the tests and the classes ``convert`` recognises by structure.

  * ``UltralyticsConv`` ultralytics ``Conv(c1, c2, k=1, s=1, p=None, g=1, d=1,
    act=True)``: conv (no bias, "same" padding) -> BatchNorm2d -> act (SiLU;
    ``act=False``: identity);
  * ``UltralyticsAttention`` ultralytics ``Attention(dim, num_heads=8,
    attn_ratio=0.5)`` (in PSA, YOLOv10, and C2PSA, YOLO11): q, k and v from one
    1x1 Conv, viewed as (B, heads, d, N) with N = H * W; each head's
    softmax((q * scale)^T k) weighs v; a depthwise 3x3 Conv of v (the
    positional encoding ``pe``) is added, then the 1x1 Conv ``proj``;
    scale = key_dim ** -0.5;
  * ``UltralyticsAreaAttention`` ultralytics ``AAttn(dim, num_heads, area=1)``
    (in A2C2f, YOLO12): the same with the N tokens split in ``area`` groups of
    N / area consecutive ones (row bands), each attending within itself;
    scale = head_dim ** -0.5, ``pe`` a depthwise 7x7 Conv.
The explicit product is ``attention_core(..., path="explicit")``: the
original's operations, in its order."""
import torch
from torch import nn

from .functional import attention_core

__all__ = ["UltralyticsConv", "UltralyticsAttention", "UltralyticsAreaAttention"]


class UltralyticsConv(nn.Module):
    """Ultralytics ``Conv``: conv2d (bias-free, padding k // 2 * d) -> BatchNorm2d -> act."""

    default_act = nn.SiLU()

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, d=1, act=True):
        super().__init__()
        if p is None:
            p = d * (k - 1) // 2 if isinstance(k, int) else [d * (x - 1) // 2 for x in k]
        self.conv = nn.Conv2d(c1, c2, k, s, p, groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = (self.default_act if act is True
                    else act if isinstance(act, nn.Module) else nn.Identity())

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class UltralyticsAttention(nn.Module):
    """Ultralytics ``Attention(dim, num_heads=8, attn_ratio=0.5)``."""

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        self.qkv = UltralyticsConv(dim, dim + 2 * self.key_dim * num_heads, 1, act=False)
        self.proj = UltralyticsConv(dim, dim, 1, act=False)
        self.pe = UltralyticsConv(dim, dim, 3, 1, g=dim, act=False)

    def attend(self, q, k, v):
        """(B, heads, d_v, N) from q, k (B, heads, key_dim, N) and v."""
        return attention_core(q, k, v, self.scale, path="explicit")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(x).view(B, self.num_heads, 2 * self.key_dim + self.head_dim,
                                   H * W).split([self.key_dim, self.key_dim, self.head_dim], dim=2)
        y = self.attend(q, k, v).reshape(B, C, H, W) + self.pe(v.reshape(B, C, H, W))
        return self.proj(y)


class UltralyticsAreaAttention(nn.Module):
    """Ultralytics ``AAttn(dim, num_heads, area=1)``."""

    def __init__(self, dim: int, num_heads: int, area: int = 1):
        super().__init__()
        self.area = area
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.all_head_dim = self.head_dim * num_heads
        self.qkv = UltralyticsConv(dim, 3 * self.all_head_dim, 1, act=False)
        self.proj = UltralyticsConv(self.all_head_dim, dim, 1, act=False)
        self.pe = UltralyticsConv(self.all_head_dim, self.all_head_dim, 7, 1, 3,
                                  g=self.all_head_dim, act=False)

    def attend(self, q, k, v):
        return attention_core(q, k, v, self.head_dim ** -0.5, path="explicit")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        N, D = H * W, self.all_head_dim
        qkv = self.qkv(x).flatten(2).transpose(1, 2)  # (B, N, 3 D)
        if self.area > 1:  # `area` bands of N / area consecutive tokens, batched
            qkv = qkv.reshape(B * self.area, N // self.area, 3 * D)
        b, n, _ = qkv.shape
        q, k, v = qkv.view(b, n, self.num_heads, 3 * self.head_dim).permute(0, 2, 3, 1).split(
            [self.head_dim] * 3, dim=2)  # each (b, heads, head_dim, n)
        y = self.attend(q, k, v).permute(0, 3, 1, 2)  # (b, n, heads, head_dim)
        v = v.permute(0, 3, 1, 2)
        y = y.reshape(B, H, W, D).permute(0, 3, 1, 2).contiguous()
        v = v.reshape(B, H, W, D).permute(0, 3, 1, 2).contiguous()
        return self.proj(y + self.pe(v))
