"""Coordinate Attention in pure PyTorch: every flavour in use, with its upstream semantics.

These classes are the oracle for tests (run in float64) and what
``attnkernels.convert`` recognises; ``coordinate_attention`` is the
functional fallback the fused backends must agree with.

Every flavour pools x into two strips, the mean over W per (n, c, h) and the
mean over H per (n, c, w), runs both through a shared 1x1 conv (+ norm) and
activation, then per strip a 1x1 conv back to C channels and a gate, and
outputs x * a_w * a_h.

Flavours (state_dict keys in brackets):
  * ``CoordAtt``        houqb/CoordAttention ``CoordAtt(inp, oup, reduction=32)``:
                        mip = max(8, inp // reduction), convs with bias,
                        BatchNorm2d(mip) over both strips, h_swish, sigmoid
                        [conv1.*, bn1.*, conv_h.*, conv_w.*]
  * ``CoordAttGroups``  the variant that matches the released weights
                        (``mbv2_ca.py``): ``CoordAtt(inp, oup, groups=32)``
                        [conv1.*, bn1.*, conv2.*, conv3.*]
  * ``CA_Block``        the seeds' ``CA_Block(channel, h, w, reduction=16)``: fixed
                        h and w, convs without bias, ReLU; its ``bn`` is built but
                        never applied [conv_1x1.weight, bn.*, F_h.weight, F_w.weight]
  * ``CoordAttn``       timm ``CoordAttn(channels, rd_ratio=1/16, rd_channels,
                        rd_divisor=8, se_factor=2/3, bias=False, act_layer=Hardswish,
                        norm_layer=BatchNorm2d, gate_layer='sigmoid', has_skip=False)``
                        [conv1.*, bn1.*, conv_h.*, conv_w.*]
"""
import torch
import torch.nn.functional as F
from torch import nn

from .._core.layers import activation, gate, make_act_layer, make_divisible, place

__all__ = ["coordinate_attention", "CoordAtt", "CoordAttGroups", "CA_Block", "CoordAttn"]


class h_sigmoid(nn.Module):
    def __init__(self, inplace=True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x):
        return self.relu(x + 3) / 6


class h_swish(nn.Module):
    def __init__(self, inplace=True):
        super().__init__()
        self.sigmoid = h_sigmoid(inplace=inplace)

    def forward(self, x):
        return x * self.sigmoid(x)


class CoordAtt(nn.Module):
    """houqb/CoordAttention ``CoordAtt(inp, oup, reduction=32)`` (oup must equal inp)."""

    def __init__(self, inp, oup, reduction=32):
        super().__init__()
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)

    def _strips(self, x):
        """The shared part: pools, conv1, bn1, activation; (y_h (N, mip, H, 1), y_w (N, mip, 1, W))."""
        _, _, h, w = x.size()
        x_h = self.pool_h(x)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)
        y = torch.cat([x_h, x_w], dim=2)
        y = self._act(self.bn1(self.conv1(y)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        return y_h, y_w.permute(0, 1, 3, 2)

    def _act(self, y):
        return self.act(y)

    def forward(self, x):
        y_h, y_w = self._strips(x)
        a_h = self.conv_h(y_h).sigmoid()
        a_w = self.conv_w(y_w).sigmoid()
        return x * a_w * a_h


class CoordAttGroups(CoordAtt):
    """The released-weights variant ``CoordAtt(inp, oup, groups=32)`` (mbv2_ca.py)."""

    def __init__(self, inp, oup, groups=32):
        nn.Module.__init__(self)
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // groups)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.conv2 = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.conv3 = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.relu = h_swish()

    def _act(self, y):
        return self.relu(y)

    def forward(self, x):
        _, _, h, w = x.size()
        y_h, y_w = self._strips(x)
        a_h = self.conv2(y_h).sigmoid().expand(-1, -1, h, w)
        a_w = self.conv3(y_w).sigmoid().expand(-1, -1, h, w)
        return x * a_w * a_h


class CA_Block(nn.Module):
    """The seeds' ``CA_Block(channel, h, w, reduction=16)``."""

    def __init__(self, channel, h, w, reduction=16):
        super().__init__()
        self.h = h
        self.w = w
        self.avg_pool_x = nn.AdaptiveAvgPool2d((h, 1))
        self.avg_pool_y = nn.AdaptiveAvgPool2d((1, w))
        self.conv_1x1 = nn.Conv2d(channel, channel // reduction, kernel_size=1, stride=1, bias=False)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(channel // reduction)  # built, never applied (upstream)
        self.F_h = nn.Conv2d(channel // reduction, channel, kernel_size=1, stride=1, bias=False)
        self.F_w = nn.Conv2d(channel // reduction, channel, kernel_size=1, stride=1, bias=False)
        self.sigmoid_h = nn.Sigmoid()
        self.sigmoid_w = nn.Sigmoid()

    def forward(self, x):
        x_h = self.avg_pool_x(x).permute(0, 1, 3, 2)
        x_w = self.avg_pool_y(x)
        y = self.relu(self.conv_1x1(torch.cat((x_h, x_w), 3)))
        y_h, y_w = y.split([self.h, self.w], 3)
        s_h = self.sigmoid_h(self.F_h(y_h.permute(0, 1, 3, 2)))
        s_w = self.sigmoid_w(self.F_w(y_w))
        return x * s_h.expand_as(x) * s_w.expand_as(x)


class CoordAttn(nn.Module):
    """timm CoordAttn."""

    def __init__(self, channels, rd_ratio=1. / 16, rd_channels=None, rd_divisor=8, se_factor=2 / 3,
                 bias=False, act_layer=nn.Hardswish, norm_layer=nn.BatchNorm2d,
                 gate_layer="sigmoid", has_skip=False, device=None, dtype=None):
        super().__init__()
        self.has_skip = has_skip
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio * se_factor, rd_divisor, round_limit=0.)
        self.conv1 = nn.Conv2d(channels, rd_channels, kernel_size=1, stride=1, padding=0, bias=bias)
        self.bn1 = norm_layer(rd_channels) if norm_layer is not None else nn.Identity()
        self.act = make_act_layer(act_layer)
        self.conv_h = nn.Conv2d(rd_channels, channels, kernel_size=1, stride=1, padding=0, bias=bias)
        self.conv_w = nn.Conv2d(rd_channels, channels, kernel_size=1, stride=1, padding=0, bias=bias)
        self.gate = make_act_layer(gate_layer)
        place(self, device, dtype)

    def forward(self, x):
        _, _, H, W = x.size()
        x_h = x.mean(3, keepdim=True)
        x_w = x.mean(2, keepdim=True).transpose(-1, -2)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h, y_w = torch.split(y, [H, W], dim=2)
        a_h = self.gate(self.conv_h(y_h))
        a_w = self.gate(self.conv_w(y_w.transpose(-1, -2)))
        out = x * a_w * a_h
        if self.has_skip:
            out = out + x
        return out


def coordinate_attention(x, w1, b1=None, wh=None, bh=None, ww=None, bw=None, *, act="hardswish",
                         gate_fn="sigmoid", bn=False, bn_weight=None, bn_bias=None,
                         running_mean=None, running_var=None, training=False, momentum=0.1,
                         eps=1e-5, skip=False):
    """y = x * a_w * a_h (+ x with skip): the strip means through
    act(BN(W1 s + b1)), then a_h = gate(Wh . + bh), a_w = gate(Ww . + bw).
    BatchNorm sees the h and w strips together and updates running_mean /
    running_var in training mode, as F.batch_norm does."""
    H, W = x.shape[2], x.shape[3]
    s = torch.cat([x.mean(3), x.mean(2)], dim=2)  # (N, C, H + W)
    z = torch.matmul(w1, s)  # (N, R, T); matmul, not einsum, exports to ONNX MatMul
    if b1 is not None:
        z = z + b1[:, None]
    if bn:  # (N, R, T): BatchNorm1d's view of BatchNorm2d over (N, R, T, 1)
        z = F.batch_norm(z.contiguous(), running_mean, running_var, bn_weight, bn_bias, training,
                         momentum, eps)
    z = activation(z, act)
    z_h, z_w = z.split([H, W], dim=2)
    a_h = torch.matmul(wh, z_h)
    a_w = torch.matmul(ww, z_w)
    if bh is not None:
        a_h = a_h + bh[:, None]
    if bw is not None:
        a_w = a_w + bw[:, None]
    out = x * gate(a_w, gate_fn)[:, :, None, :] * gate(a_h, gate_fn)[:, :, :, None]
    return out + x if skip else out
