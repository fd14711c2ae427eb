"""NAM's channel attention in pure PyTorch: every flavour in use, as written upstream.

These classes are the oracle for tests (run in float64) and what
``attnkernels.convert`` recognises; ``nam_channel_attention`` is the functional
fallback the fused backends must agree with.

With bn = BatchNorm2d(C) (batch statistics in training mode, running ones in
eval mode, running statistics updated as nn.BatchNorm2d does) and
w = |gamma| / sum(|gamma|) from the BatchNorm's scales:
    out = x * sigmoid(w * bn(x))      (w per channel)
Upstream reads w from ``bn2.weight.data``: no gradient flows through the
normalisation of the scales; gamma and beta get theirs through bn(x) alone.

Flavours (one child ``bn2``, state_dict keys ``bn2.*``):
  * ``Channel_Att``   the official ``Channel_Att(channels, t=16)``
                      (Christian-lyc/NAM); ``t`` is unused.
  * ``NAMAttention``  the YOLO codebases' ``NAMAttention(channels)``: a
                      ``Channel_Att`` child named ``Channel_Att`` (converted
                      as that child).
"""
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["nam_channel_attention", "Channel_Att", "NAMAttention"]


def nam_channel_attention(x: torch.Tensor, bn_weight: torch.Tensor, bn_bias: torch.Tensor,
                          running_mean=None, running_var=None, training: bool = False,
                          momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """x * sigmoid(bn(x) * |gamma| / sum|gamma|), the weights taken without gradient."""
    z = F.batch_norm(x, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)
    w = bn_weight.detach().abs() / torch.sum(bn_weight.detach().abs())
    return torch.sigmoid(z * w.view(1, -1, 1, 1)) * x


class Channel_Att(nn.Module):
    """The official ``Channel_Att(channels, t=16)``."""

    def __init__(self, channels, t=16):
        super().__init__()
        self.channels = channels
        self.bn2 = nn.BatchNorm2d(self.channels, affine=True)

    def forward(self, x):
        residual = x
        x = self.bn2(x)
        weight_bn = self.bn2.weight.data.abs() / torch.sum(self.bn2.weight.data.abs())
        x = x.permute(0, 2, 3, 1).contiguous()
        x = torch.mul(weight_bn, x)
        x = x.permute(0, 3, 1, 2).contiguous()
        return torch.sigmoid(x) * residual


class NAMAttention(nn.Module):
    """The YOLO codebases' ``NAMAttention(channels)``: its ``Channel_Att`` alone."""

    def __init__(self, channels):
        super().__init__()
        self.Channel_Att = Channel_Att(channels)

    def forward(self, x):
        return self.Channel_Att(x)
