"""CoT attention in pure PyTorch: the oracle of the tests and the class
``convert`` recognises by structure.

  * ``CoTAttention(dim=512, kernel_size=3)`` (External-Attention-pytorch
    model/attention/CoTAttention.py; seed 002's copy): k1 = ReLU(BN(grouped
    (groups=4) k x k conv of x)); v = BN(1x1 conv of x); att = the
    ``attention_embed`` of cat(k1, x) (1x1 conv 2C -> 2C/4, BN, ReLU, 1x1 conv
    with bias 2C/4 -> k*k*C), averaged over its k*k channels per output
    channel (channel c*k*k + j, j < k*k, as ``reshape(bs, c, k*k, h, w)``
    orders them); out = k1 + softmax(att over the H*W pixels) * v.

``cot_softmax_gate`` is that last step alone, the functional fallback the
fused backends must agree with."""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cot_softmax_gate", "CoTAttention"]


def cot_softmax_gate(att: torch.Tensor, v: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
    """``k1 + softmax(att over H*W) * v`` for (B, C, H, W) tensors, in the original's order."""
    bs, c, h, w = att.shape
    k2 = F.softmax(att.reshape(bs, c, h * w), dim=-1) * v.reshape(bs, c, h * w)
    return k1 + k2.view(bs, c, h, w)


class CoTAttention(nn.Module):
    """External-Attention-pytorch ``CoTAttention(dim=512, kernel_size=3)``."""

    def __init__(self, dim=512, kernel_size=3):
        super().__init__()
        self.dim = dim
        self.kernel_size = kernel_size
        self.key_embed = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=4,
                      bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU())
        self.value_embed = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        factor = 4
        self.attention_embed = nn.Sequential(
            nn.Conv2d(2 * dim, 2 * dim // factor, 1, bias=False),
            nn.BatchNorm2d(2 * dim // factor),
            nn.ReLU(),
            nn.Conv2d(2 * dim // factor, kernel_size * kernel_size * dim, 1))

    def attention(self, y, bs, c, h, w):
        """The averaged attention logits (bs, c, h*w) from cat(k1, x)."""
        att = self.attention_embed(y).reshape(bs, c, self.kernel_size * self.kernel_size, h, w)
        return att.mean(2, keepdim=False).view(bs, c, -1)

    def forward(self, x):
        bs, c, h, w = x.shape
        k1 = self.key_embed(x)
        v = self.value_embed(x).view(bs, c, -1)
        att = self.attention(torch.cat([k1, x], dim=1), bs, c, h, w)
        k2 = F.softmax(att, dim=-1) * v
        return k1 + k2.view(bs, c, h, w)
