"""Selective Kernel attention in pure PyTorch: every flavour in use, as written upstream.

These classes are the oracle for tests (run in float64) and what
``attnkernels.convert`` recognises; ``selective_kernel`` is the functional
fallback the fused backends must agree with.

With K branch outputs f_k (B, C, H, W) (convolutions of x, each with its own
kernel size or dilation, then BatchNorm and ReLU) and a gate network G:
    s = mean_hw(sum_k f_k)                   (B, C)
    a = softmax over k of G(s)               (B, K, C)
    out = sum_k a_k f_k

Flavours:
  * ``SKAttention``      seed 002 / External-Attention-pytorch
                         ``SKAttention(channel=512, kernels=[1, 3, 5, 7],
                         reduction=8, group=1, L=32)``: branches
                         ``convs[k]`` = Sequential(conv, bn, relu), G = one
                         Linear ``fc`` (C -> d, d = max(L, C // reduction)),
                         then one Linear per branch ``fcs[k]`` (d -> C).
  * ``SelectiveKernel``  timm's ``SelectiveKernel(in_channels, out_channels,
                         kernel_size=[3, 5], ...)``: branches ``paths[k]``
                         (ConvNormAct; with ``keep_3x3`` every kernel is 3x3
                         and larger ones become dilations; with
                         ``split_input`` each branch convolves its share of
                         the input channels), G = ``attn``: 1x1 conv
                         ``fc_reduce`` (no bias), BatchNorm ``bn``, ReLU
                         ``act``, 1x1 conv ``fc_select`` to K * C channels,
                         read as (B, K, C).
"""
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

__all__ = ["selective_kernel", "SKAttention", "SelectiveKernel"]


def branch_pool(branches: Sequence[torch.Tensor]) -> torch.Tensor:
    """s = mean over H, W of the branches' sum: (B, C)."""
    return sum(branches).mean((2, 3))


def branch_select(branches: Sequence[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """sum_k softmax_k(logits)[:, k, :, None, None] * branches[k]; logits (B, K, C)."""
    a = torch.softmax(logits, dim=1)
    return sum(a[:, k, :, None, None] * f for k, f in enumerate(branches))


def selective_kernel(branches: Sequence[torch.Tensor],
                     gate: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The attention of Selective Kernel over branch outputs: the pool, the
    gate network ``gate`` ((B, C) -> logits (B, K, C)), the softmax over the
    branches and their weighted sum."""
    branches = list(branches)
    return branch_select(branches, gate(branch_pool(branches)))


class SKAttention(nn.Module):
    """Seed 002's ``SKAttention(channel=512, kernels=[1, 3, 5, 7], reduction=8, group=1, L=32)``."""

    def __init__(self, channel=512, kernels=[1, 3, 5, 7], reduction=8, group=1, L=32):  # noqa: B006
        super().__init__()
        self.d = max(L, channel // reduction)
        self.convs = nn.ModuleList([])
        for k in kernels:
            self.convs.append(nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(channel, channel, kernel_size=k, padding=k // 2, groups=group)),
                ("bn", nn.BatchNorm2d(channel)),
                ("relu", nn.ReLU()),
            ])))
        self.fc = nn.Linear(channel, self.d)
        self.fcs = nn.ModuleList([])
        for _ in range(len(kernels)):
            self.fcs.append(nn.Linear(self.d, channel))
        self.softmax = nn.Softmax(dim=0)

    def forward(self, x):
        B, C, H, W = x.size()
        conv_outs = [conv(x) for conv in self.convs]
        feats = torch.stack(conv_outs, 0)  # (K, B, C, H, W)
        U = sum(conv_outs)
        S = U.mean(-1).mean(-1)
        Z = self.fc(S)
        weights = [fc(Z).view(B, C, 1, 1) for fc in self.fcs]
        scale_weight = self.softmax(torch.stack(weights, 0))  # (K, B, C, 1, 1)
        return (scale_weight * feats).sum(0)


# ---------------------------------------------------------------- timm

def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """timm's channel rounding: to a multiple of divisor, never below
    round_limit of v."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a BatchNorm2d, then ``drop`` and ``act``
    (state_dict keys those of the BatchNorm)."""

    def __init__(self, num_features, act_layer=nn.ReLU, eps=1e-5, momentum=0.1, device=None,
                 dtype=None):
        super().__init__(num_features, eps=eps, momentum=momentum, device=device, dtype=dtype)
        self.drop = nn.Identity()
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def forward(self, x):
        return self.act(self.drop(super().forward(x)))


class ConvNormAct(nn.Module):
    """timm's ConvNormAct: a bias-free conv with timm's symmetric padding,
    then BatchNormAct2d ``bn``."""

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, dilation=1, groups=1,
                 act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if norm_layer is not nn.BatchNorm2d:
            raise NotImplementedError("the reference re-creates timm's BatchNorm2d paths only")
        padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=groups, bias=False, **dd)
        self.bn = BatchNormAct2d(out_channels, act_layer=act_layer, **dd)

    def forward(self, x):
        return self.bn(self.conv(x))


class SelectiveKernelAttn(nn.Module):
    """timm's ``SelectiveKernelAttn(channels, num_paths=2, attn_channels=32)``."""

    def __init__(self, channels, num_paths=2, attn_channels=32, act_layer=nn.ReLU,
                 norm_layer=nn.BatchNorm2d, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, kernel_size=1, bias=False, **dd)
        self.bn = norm_layer(attn_channels, **dd)
        self.act = act_layer(inplace=True)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, kernel_size=1, bias=False,
                                   **dd)

    def forward(self, x):
        assert x.shape[1] == self.num_paths
        x = x.sum(1).mean((2, 3), keepdim=True)
        x = self.act(self.bn(self.fc_reduce(x)))
        x = self.fc_select(x)
        B, C, H, W = x.shape
        return torch.softmax(x.view(B, self.num_paths, C // self.num_paths, H, W), dim=1)


class SelectiveKernel(nn.Module):
    """timm's ``SelectiveKernel`` (``timm.layers.SelectiveKernel``), with
    timm's defaults; aa_layer and drop_layer are not re-created."""

    def __init__(self, in_channels: int, out_channels: Optional[int] = None,
                 kernel_size: Optional[List[int]] = None, stride: int = 1, dilation: int = 1,
                 groups: int = 1, rd_ratio: float = 1. / 16, rd_channels: Optional[int] = None,
                 rd_divisor: int = 8, keep_3x3: bool = True, split_input: bool = True,
                 act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d, aa_layer=None, drop_layer=None,
                 device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        if aa_layer is not None or drop_layer is not None:
            raise NotImplementedError("the reference re-creates SelectiveKernel without "
                                      "aa_layer and drop_layer")
        out_channels = out_channels or in_channels
        kernel_size = kernel_size or [3, 5]
        if not isinstance(kernel_size, list):
            kernel_size = [kernel_size] * 2
        for k in kernel_size:
            assert k >= 3 and k % 2
        if keep_3x3:
            dilation = [dilation * (k - 1) // 2 for k in kernel_size]
            kernel_size = [3] * len(kernel_size)
        else:
            dilation = [dilation] * len(kernel_size)
        self.num_paths = len(kernel_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.split_input = split_input
        if self.split_input:
            assert in_channels % self.num_paths == 0
            in_channels = in_channels // self.num_paths
        groups = min(out_channels, groups)
        self.paths = nn.ModuleList([
            ConvNormAct(in_channels, out_channels, kernel_size=k, stride=stride, dilation=d,
                        groups=groups, act_layer=act_layer, norm_layer=norm_layer, **dd)
            for k, d in zip(kernel_size, dilation)])
        attn_channels = rd_channels or make_divisible(out_channels * rd_ratio, divisor=rd_divisor)
        self.attn = SelectiveKernelAttn(out_channels, self.num_paths, attn_channels, **dd)

    def forward(self, x):
        if self.split_input:
            x_split = torch.split(x, self.in_channels // self.num_paths, 1)
            x_paths = [op(x_split[i]) for i, op in enumerate(self.paths)]
        else:
            x_paths = [op(x) for op in self.paths]
        x = torch.stack(x_paths, dim=1)
        x_attn = self.attn(x)
        return torch.sum(x * x_attn, dim=1)
