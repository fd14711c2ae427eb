"""CBAM in pure PyTorch: every flavour in use, with its upstream semantics.

These classes are the oracle for tests (run in float64) and what
``attnkernels.convert`` recognises. Each CBAM is a channel gate followed by a
spatial gate on the channel-gated x. What differs between flavours:

  * the shared MLP: 1x1 convs or Linear layers, with or without bias; how the
    pooled vectors enter it (MLP(avg) + MLP(max), or MLP(0.5 avg + 0.5 max));
  * the spatial input: [mean, max] over channels, [max, mean], or 0.5 mean +
    0.5 max; a kxk conv, with BatchNorm or not;
  * how a max routes its gradient: ``amax`` (timm) shares it between equal
    maxima; ``max_pool2d``, ``AdaptiveMaxPool2d`` and ``torch.max(dim)`` (the
    others) give it all to the first.

Flavours (state_dict keys in brackets):
  * ``CBAM``            the seeds' ``CBAM(in_planes, ratio=16, kernel_size=7)``
                        [ca.fc1.weight, ca.fc2.weight, sa.conv1.weight]
  * ``CBAMBlock``       the seeds' ``cbam_block(channel, ratio=8, kernel_size=7)``
                        with a Sequential MLP [channelattention.fc.{0,2}.weight,
                        spatialattention.conv.weight]
  * ``CBAMBlockFc``     the seeds' ``cbam_block`` with fc1/relu1/fc2 and conv1
                        [channelattention.fc{1,2}.weight, spatialattention.conv1.weight]
  * ``OfficialCBAM``    Jongchan/attention-module ``CBAM(gate_channels,
                        reduction_ratio=16, pool_types=['avg', 'max'], no_spatial=False)``:
                        Linear MLP with bias, spatial input [max, mean], 7x7 conv +
                        BatchNorm(momentum=0.01) [ChannelGate.mlp.{1,3}.*,
                        SpatialGate.spatial.conv.weight, SpatialGate.spatial.bn.*]
  * ``CbamModule``      timm: ``(channels, rd_ratio=1/16, rd_channels, rd_divisor=1,
                        spatial_kernel_size=7, act_layer, gate_layer, mlp_bias)``
                        [channel.fc{1,2}.*, spatial.conv.conv.weight, spatial.conv.bn.*]
  * ``LightCbamModule`` timm's light variant: MLP(0.5 avg + 0.5 max) with a plain
                        sigmoid, a 1-channel spatial input 0.5 mean + 0.5 max
  * ``UltralyticsCBAM`` Ultralytics ``CBAM(c1, kernel_size=7)``: the channel gate
                        is one 1x1 conv with bias on the average, no BatchNorm
                        [channel_attention.fc.*, spatial_attention.cv1.weight]
"""
import torch
import torch.nn.functional as F
from torch import nn

from .._core.layers import make_act_layer, make_divisible, place

__all__ = ["convolutional_block_attention", "CBAM", "CBAMBlock", "CBAMBlockFc", "OfficialCBAM", "CbamModule", "LightCbamModule", "UltralyticsCBAM", "LinearCBAM", "ExternalCBAMBlock", "UltralyticsChannelAttention"]


# ---------------------------------------------------------------- the seeds

class ChannelAttention(nn.Module):
    """The seeds' channel attention (1x1-conv MLP fc1/relu1/fc2, no bias); returns the gate."""

    def __init__(self, in_planes, ratio=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(in_planes, in_planes // ratio, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2d(in_planes // ratio, in_planes, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        avg_out = self.fc2(self.relu1(self.fc1(self.avg_pool(x))))
        max_out = self.fc2(self.relu1(self.fc1(self.max_pool(x))))
        return self.sigmoid(avg_out + max_out)


class SpatialAttention(nn.Module):
    """The seeds' spatial attention (conv1: 2 -> 1, k 3 or 7, no bias); returns the gate."""

    conv_name = "conv1"  # the seeds spell it two ways; the state_dict keys follow it

    def __init__(self, kernel_size=7):
        super().__init__()
        assert kernel_size in (3, 7), "kernel size must be 3 or 7"
        padding = 3 if kernel_size == 7 else 1
        setattr(self, self.conv_name, nn.Conv2d(2, 1, kernel_size, padding=padding, bias=False))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        conv = getattr(self, self.conv_name)
        return self.sigmoid(conv(torch.cat([avg_out, max_out], dim=1)))


class CBAM(nn.Module):
    """The seeds' ``CBAM(in_planes, ratio=16, kernel_size=7)``."""

    def __init__(self, in_planes, ratio=16, kernel_size=7):
        super().__init__()
        self.ca = ChannelAttention(in_planes, ratio)
        self.sa = SpatialAttention(kernel_size)

    def forward(self, x):
        out = x * self.ca(x)
        return out * self.sa(out)


class ChannelAttentionSeq(nn.Module):
    """The seeds' channel attention with the MLP as ``fc = Sequential(conv, ReLU, conv)``."""

    def __init__(self, channel, ratio=8):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(channel, channel // ratio, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(channel // ratio, channel, 1, bias=False),
        )
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x)))


class SpatialAttentionConv(SpatialAttention):
    """The seeds' spatial attention with the conv named ``conv``."""

    conv_name = "conv"


class CBAMBlock(nn.Module):
    """The seeds' ``cbam_block(channel, ratio=8, kernel_size=7)`` (Sequential MLP, ``conv``)."""

    def __init__(self, channel, ratio=8, kernel_size=7):
        super().__init__()
        self.channelattention = ChannelAttentionSeq(channel, ratio=ratio)
        self.spatialattention = SpatialAttentionConv(kernel_size=kernel_size)

    def forward(self, x):
        x = x * self.channelattention(x)
        return x * self.spatialattention(x)


class CBAMBlockFc(CBAMBlock):
    """The seeds' ``cbam_block(channel, ratio=8, kernel_size=7)`` built from fc1/relu1/fc2 and conv1."""

    def __init__(self, channel, ratio=8, kernel_size=7):
        nn.Module.__init__(self)
        self.channelattention = ChannelAttention(channel, ratio=ratio)
        self.spatialattention = SpatialAttention(kernel_size=kernel_size)


# ---------------------------------------------------------------- Jongchan/attention-module

class BasicConv(nn.Module):
    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, relu=True, bn=True, bias=False):
        super().__init__()
        self.out_channels = out_planes
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


def logsumexp_2d(tensor):
    flat = tensor.view(tensor.size(0), tensor.size(1), -1)
    s, _ = torch.max(flat, dim=2, keepdim=True)
    return s + (flat - s).exp().sum(dim=2, keepdim=True).log()


class ChannelGate(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16, pool_types=("avg", "max")):
        super().__init__()
        self.gate_channels = gate_channels
        self.mlp = nn.Sequential(
            Flatten(),
            nn.Linear(gate_channels, gate_channels // reduction_ratio),
            nn.ReLU(),
            nn.Linear(gate_channels // reduction_ratio, gate_channels),
        )
        self.pool_types = list(pool_types)

    def forward(self, x):
        window = (x.size(2), x.size(3))
        total = None
        for pool_type in self.pool_types:
            if pool_type == "avg":
                raw = self.mlp(F.avg_pool2d(x, window, stride=window))
            elif pool_type == "max":
                raw = self.mlp(F.max_pool2d(x, window, stride=window))
            elif pool_type == "lp":
                raw = self.mlp(F.lp_pool2d(x, 2, window, stride=window))
            elif pool_type == "lse":
                raw = self.mlp(logsumexp_2d(x))
            else:
                continue  # upstream silently skips unknown pool types
            total = raw if total is None else total + raw
        scale = torch.sigmoid(total).unsqueeze(2).unsqueeze(3).expand_as(x)
        return x * scale


class ChannelPool(nn.Module):
    def forward(self, x):
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class SpatialGate(nn.Module):
    def __init__(self, kernel_size=7):  # upstream hard-codes 7; Triplet's k=3 weights need 3
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2,
                                 relu=False)

    def forward(self, x):
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class OfficialCBAM(nn.Module):
    """Jongchan/attention-module ``CBAM(gate_channels, reduction_ratio=16,
    pool_types=['avg', 'max'], no_spatial=False)``."""

    def __init__(self, gate_channels, reduction_ratio=16, pool_types=("avg", "max"),
                 no_spatial=False):
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio, pool_types)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = SpatialGate()

    def forward(self, x):
        x_out = self.ChannelGate(x)
        if not self.no_spatial:
            x_out = self.SpatialGate(x_out)
        return x_out


# ---------------------------------------------------------------- timm

class ConvNormAct(nn.Module):
    """timm's ``ConvNormAct(in, out, k, apply_act=False)`` as CBAM uses it: a
    same-padded conv without bias, then BatchNorm (eps 1e-5, momentum 0.1)."""

    def __init__(self, in_channels, out_channels, kernel_size=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x))


class ChannelAttn(nn.Module):
    """timm ChannelAttn: gate(fc2(act(fc1(mean))) + fc2(act(fc1(amax))))."""

    def __init__(self, channels, rd_ratio=1. / 16, rd_channels=None, rd_divisor=1,
                 act_layer=nn.ReLU, gate_layer="sigmoid", mlp_bias=False):
        super().__init__()
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=mlp_bias)
        self.act = make_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=mlp_bias)
        self.gate = make_act_layer(gate_layer)

    def forward(self, x):
        x_avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        x_max = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * self.gate(x_avg + x_max)


class LightChannelAttn(ChannelAttn):
    """timm LightChannelAttn: sigmoid(MLP(0.5 mean + 0.5 amax)); ``gate`` is unused upstream."""

    def forward(self, x):
        x_pool = 0.5 * x.mean((2, 3), keepdim=True) + 0.5 * x.amax((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x_pool))))


class SpatialAttn(nn.Module):
    def __init__(self, kernel_size=7, gate_layer="sigmoid"):
        super().__init__()
        self.conv = ConvNormAct(2, 1, kernel_size)
        self.gate = make_act_layer(gate_layer)

    def forward(self, x):
        x_attn = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * self.gate(self.conv(x_attn))


class LightSpatialAttn(nn.Module):
    def __init__(self, kernel_size=7, gate_layer="sigmoid"):
        super().__init__()
        self.conv = ConvNormAct(1, 1, kernel_size)
        self.gate = make_act_layer(gate_layer)

    def forward(self, x):
        x_attn = 0.5 * x.mean(dim=1, keepdim=True) + 0.5 * x.amax(dim=1, keepdim=True)
        return x * self.gate(self.conv(x_attn))


class CbamModule(nn.Module):
    """timm CbamModule."""

    channel_attn = ChannelAttn

    def __init__(self, channels, rd_ratio=1. / 16, rd_channels=None, rd_divisor=1,
                 spatial_kernel_size=7, act_layer=nn.ReLU, gate_layer="sigmoid", mlp_bias=False,
                 device=None, dtype=None):
        super().__init__()
        self.channel = self.channel_attn(channels, rd_ratio=rd_ratio, rd_channels=rd_channels,
                                         rd_divisor=rd_divisor, act_layer=act_layer,
                                         gate_layer=gate_layer, mlp_bias=mlp_bias)
        self.spatial = self.spatial_attn(spatial_kernel_size, gate_layer)
        place(self, device, dtype)

    @staticmethod
    def spatial_attn(kernel_size, gate_layer):
        return SpatialAttn(kernel_size, gate_layer=gate_layer)

    def forward(self, x):
        return self.spatial(self.channel(x))


class LightCbamModule(CbamModule):
    """timm LightCbamModule: CbamModule's arguments with the light parts (its
    spatial gate is always a sigmoid)."""

    channel_attn = LightChannelAttn

    @staticmethod
    def spatial_attn(kernel_size, gate_layer):
        return LightSpatialAttn(kernel_size)


# ---------------------------------------------------------------- Ultralytics

class UltralyticsChannelAttention(nn.Module):
    """Ultralytics ChannelAttention(channels): x * sigmoid(fc(mean)), fc a 1x1 conv with bias."""

    def __init__(self, channels):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return x * self.act(self.fc(self.pool(x)))


class UltralyticsSpatialAttention(nn.Module):
    """Ultralytics SpatialAttention(kernel_size=7): x * sigmoid(cv1([mean, max]))."""

    def __init__(self, kernel_size=7):
        super().__init__()
        assert kernel_size in {3, 7}, "kernel size must be 3 or 7"
        padding = 3 if kernel_size == 7 else 1
        self.cv1 = nn.Conv2d(2, 1, kernel_size, padding=padding, bias=False)
        self.act = nn.Sigmoid()

    def forward(self, x):
        pooled = torch.cat([torch.mean(x, 1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)
        return x * self.act(self.cv1(pooled))


class UltralyticsCBAM(nn.Module):
    """Ultralytics ``CBAM(c1, kernel_size=7)``."""

    def __init__(self, c1, kernel_size=7):
        super().__init__()
        self.channel_attention = UltralyticsChannelAttention(c1)
        self.spatial_attention = UltralyticsSpatialAttention(kernel_size)

    def forward(self, x):
        return self.spatial_attention(self.channel_attention(x))


# ---------------------------------------------------------------- seed 001

class LinearChannelAttention(nn.Module):
    """Seed 001's ChannelAttention(channel, ratio=16): a Linear MLP without bias
    (``fc = Sequential(Linear, ReLU, Linear)``) shared by the flattened mean and
    max pools; returns x times the gate."""

    def __init__(self, channel, ratio=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // ratio, bias=False), nn.ReLU(),
                                nn.Linear(channel // ratio, channel, bias=False))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        n = x.size(0)
        z = self.fc(self.avg_pool(x).view(n, -1)) + self.fc(self.max_pool(x).view(n, -1))
        return x * self.sigmoid(z).view(n, -1, 1, 1)


class GatingSpatialAttention(nn.Module):
    """Seed 001's SpatialAttention(kernel_size=7): ``conv`` (2 -> 1, padding
    k // 2, no bias) on [mean, max] over the channels; returns x times the gate."""

    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        pooled = torch.cat([torch.mean(x, dim=1, keepdim=True),
                            torch.max(x, dim=1, keepdim=True)[0]], dim=1)
        return x * self.sigmoid(self.conv(pooled))


class LinearCBAM(nn.Module):
    """Seed 001's ``CBAM(channel, ratio=16, kernel_size=7)``: the Linear-MLP
    channel attention, then the spatial attention, each gating its own input."""

    def __init__(self, channel, ratio=16, kernel_size=7):
        super().__init__()
        self.channel_attention = LinearChannelAttention(channel, ratio)
        self.spatial_attention = GatingSpatialAttention(kernel_size)

    def forward(self, x):
        return self.spatial_attention(self.channel_attention(x))


# ---------------------------------------------------------------- External-Attention-pytorch

class ExternalChannelAttention(nn.Module):
    """External-Attention-pytorch's ChannelAttention(channel, reduction=16): the
    max and mean pools through one ``se`` MLP of 1x1 convs without bias; returns
    the gate."""

    def __init__(self, channel, reduction=16):
        super().__init__()
        self.maxpool = nn.AdaptiveMaxPool2d(1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.se = nn.Sequential(nn.Conv2d(channel, channel // reduction, 1, bias=False), nn.ReLU(),
                                nn.Conv2d(channel // reduction, channel, 1, bias=False))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.se(self.maxpool(x)) + self.se(self.avgpool(x)))


class ExternalSpatialAttention(nn.Module):
    """External-Attention-pytorch's SpatialAttention(kernel_size=7): ``conv``
    (2 -> 1, padding k // 2, with bias) on [max, mean] over the channels;
    returns the gate."""

    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        pooled = torch.cat([torch.max(x, dim=1, keepdim=True)[0],
                            torch.mean(x, dim=1, keepdim=True)], 1)
        return self.sigmoid(self.conv(pooled))


class ExternalCBAMBlock(nn.Module):
    """External-Attention-pytorch's ``CBAMBlock(channel=512, reduction=16,
    kernel_size=49)``: both gates, then the block's residual (``out + x``)."""

    def __init__(self, channel=512, reduction=16, kernel_size=49):
        super().__init__()
        self.ca = ExternalChannelAttention(channel=channel, reduction=reduction)
        self.sa = ExternalSpatialAttention(kernel_size=kernel_size)

    def forward(self, x):
        out = x * self.ca(x)
        out = out * self.sa(out)
        return out + x


# ---------------------------------------------------------------- functional

def _max_over(t, dims, first_max):
    """Max over ``dims`` (kept): amax (ties share the gradient) or max_pool-style
    (the first maximal element takes it)."""
    if not first_max:
        return t.amax(dims, keepdim=True)
    flat = t.movedim(dims[0], -1) if len(dims) == 1 else t.flatten(2)[..., None, :]
    m = flat.max(-1, keepdim=True)[0]
    return m.movedim(-1, dims[0]) if len(dims) == 1 else m


def convolutional_block_attention(x, w1, b1=None, w2=None, b2=None, conv_weight=None,
                                  conv_bias=None, *, act="relu", channel_gate="sigmoid",
                                  channel_pool="avg_max", spatial_input="mean_max",
                                  spatial_gate="sigmoid", bn=False, bn_weight=None, bn_bias=None,
                                  running_mean=None, running_var=None, training=False,
                                  momentum=0.1, eps=1e-5, first_max=False):
    """Pure-PyTorch CBAM: y = u * sa, u = x * ca, with
    ca = channel_gate(sum over pools of W2 act(W1 pool + b1) + b2) and
    sa = spatial_gate(BN(conv(spatial statistics of u))). Arguments as
    ``attnkernels.functional.convolutional_block_attention``; BatchNorm updates
    ``running_mean`` / ``running_var`` in training mode, as F.batch_norm does."""
    from .._core.layers import activation, gate

    def mlp(s):
        h = F.linear(s, w1, b1)
        return h if w2 is None else F.linear(activation(h, act), w2, b2)

    if channel_pool == "none":  # no channel gate
        return _spatial_gate(x, conv_weight, conv_bias, spatial_input, spatial_gate, bn,
                             bn_weight, bn_bias, running_mean, running_var, training, momentum,
                             eps, first_max)
    cmean = x.mean((2, 3))
    cmax = _max_over(x, (2, 3), first_max)[:, :, 0, 0]
    if channel_pool == "avg_max":
        z = mlp(cmean) + mlp(cmax)
    elif channel_pool == "mix":
        z = mlp(0.5 * cmean + 0.5 * cmax)
    elif channel_pool == "avg":
        z = mlp(cmean)
    else:
        z = mlp(cmax)
    u = x * gate(z, channel_gate)[:, :, None, None]
    if spatial_input == "none":
        return u
    return _spatial_gate(u, conv_weight, conv_bias, spatial_input, spatial_gate, bn, bn_weight,
                         bn_bias, running_mean, running_var, training, momentum, eps, first_max)


def _spatial_gate(u, conv_weight, conv_bias, spatial_input, spatial_gate, bn, bn_weight, bn_bias,
                  running_mean, running_var, training, momentum, eps, first_max):
    """u * spatial_gate(BN(conv(the mean and max of u over channels)))."""
    from .._core.layers import gate

    smean = u.mean(1, keepdim=True)
    smax = _max_over(u, (1,), first_max)
    if spatial_input == "mean_max":
        s = torch.cat([smean, smax], 1)
    elif spatial_input == "max_mean":
        s = torch.cat([smax, smean], 1)
    else:
        s = 0.5 * smean + 0.5 * smax
    q = F.conv2d(s, conv_weight, conv_bias, padding=conv_weight.shape[-1] // 2)
    if bn:
        q = F.batch_norm(q, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)
    return u * gate(q, spatial_gate)
