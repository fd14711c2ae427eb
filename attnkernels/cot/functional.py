"""CoT attention's two rewrites, as functions of the module's tensors."""
import torch
import torch.nn.functional as F

__all__ = ["averaged_conv1x1", "softmax_gate"]


def averaged_conv1x1(h: torch.Tensor, weight: torch.Tensor, bias, groups_of: int) -> torch.Tensor:
    """The mean over each output channel's ``groups_of`` consecutive outputs
    of the 1x1 conv ``(weight, bias)`` of h: one 1x1 conv with the averaged
    weight (out / groups_of, in, 1, 1) and bias, the same function (the mean
    is linear); gradients reach the original weight and bias through it."""
    out_channels = weight.shape[0] // groups_of
    w = weight.reshape(out_channels, groups_of, *weight.shape[1:]).mean(1)
    b = None if bias is None else bias.reshape(out_channels, groups_of).mean(1)
    return F.conv2d(h, w, b)


def softmax_gate(att: torch.Tensor, v: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
    """``k1 + softmax(att over H*W) * v`` for (B, C, H, W) tensors, the last two
    steps in one addcmul."""
    bs, c, h, w = k1.shape
    weights = F.softmax(att.reshape(bs, c, h * w), dim=-1).view(bs, c, h, w)
    return torch.addcmul(k1, weights, v)
