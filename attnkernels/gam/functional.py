"""GAM's rewrites, as functions of the module's tensors."""
import torch
import torch.nn.functional as F

__all__ = ["pixel_linear", "folded_conv_bn", "shuffled_product"]


def pixel_linear(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """A Linear over each pixel's channels of x (B, C, H, W), as a 1x1 conv:
    the output in x's layout (NCHW or channels_last), no permuted copy."""
    return F.conv2d(x, weight[:, :, None, None], bias)


def folded_conv_bn(x: torch.Tensor, conv, bn) -> torch.Tensor:
    """``bn(conv(x))`` for a BatchNorm2d using its running statistics (eval):
    one convolution with the normalisation folded into its weight and bias."""
    inv = torch.rsqrt(bn.running_var + bn.eps)
    scale = inv if bn.weight is None else bn.weight * inv
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return F.conv2d(x, conv.weight * scale[:, None, None, None], bias, conv.stride, conv.padding,
                    conv.dilation, conv.groups)


def shuffled_product(x: torch.Tensor, s: torch.Tensor, groups: int) -> torch.Tensor:
    """``x * channel_shuffle(s, groups)`` (reference.channel_shuffle) with s
    read through a permuted view: no shuffled copy made, none kept for
    backward. Channel i * groups + j of the product takes channel
    j * (C / groups) + i of s."""
    b, c, h, w = x.shape
    x5 = x.view(b, c // groups, groups, h, w)
    s5 = s.view(b, groups, c // groups, h, w).transpose(1, 2)
    return (x5 * s5).view(b, c, h, w)
