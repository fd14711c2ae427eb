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
original's operations, in its order.

Token-major attention (inputs (batch, tokens, d_model)), External-Attention-
pytorch (seed 002) and seed 000:

  * ``ScaledDotProductAttention(d_model, d_k, d_v, h, dropout=.1)``: Linear
    projections fc_q, fc_k, fc_v to h heads; ``softmax(q k^T / sqrt(d_k))``,
    optionally times ``attention_weights`` and with ``attention_mask`` (True:
    masked) filled with -inf before the softmax (a query with every key
    masked gives NaN), dropout on the attention, then fc_o;
  * ``SimplifiedScaledDotProductAttention(d_model, h, dropout=.1)``: the same
    without the q/k/v projections (d_k = d_v = d_model // h);
  * ``MultiHeadSelfAttention(embed_size, heads)`` (seed 000): no projections
    either (its ``values``/``keys``/``queries`` Linears are never called);
    ``softmax(energy / sqrt(embed_size))`` where ``energy = q k^T`` is filled
    with -1e20 where ``mask == 0`` (a fully masked query averages every
    value), then fc_out;
  * DANet as External-Attention-pytorch writes it: ``PositionAttentionModule``
    (a 3x3 conv, then ScaledDotProductAttention with one head over the H*W
    pixels as tokens, output (B, H*W, C)), ``ChannelAttentionModule`` (a 3x3
    conv, then SimplifiedScaledDotProductAttention over the C channels as
    tokens of H*W features: its fc_o is Linear(H*W, H*W), so one map size;
    output (B, C, H*W)) and ``DAModule`` (``p + c``, both as (B, C, H, W));
    ``DAModuleSeed``, the seed's copy, returns ``(x + 0.5 p) + (x + 0.2 c)``.
    Both DAModule constructors build their branches with d_model=512, H=W=7
    whatever they are given, as upstream does: ``danet(...)`` builds one at
    another size.

DANet as its authors write it (junfu1115/DANet, ``encoding/nn/da_att.py``):

  * ``PAM_Module(in_dim)``: q, k from 1x1 convs to in_dim // 8, v from a 1x1
    conv; ``softmax(q^T k)`` over the H*W pixels (no scale) weighs v;
    ``gamma * out + x`` (gamma a zero-initialised scalar parameter);
  * ``CAM_Module(in_dim)``: over the channels of x itself, ``softmax(max(E) -
    E)`` with E = x x^T (C x C) weighs x; ``gamma * out + x``."""
import math

import torch
from torch import nn

from .functional import attention_core

__all__ = ["UltralyticsConv", "UltralyticsAttention", "UltralyticsAreaAttention",
           "ScaledDotProductAttention", "SimplifiedScaledDotProductAttention",
           "MultiHeadSelfAttention", "PositionAttentionModule", "ChannelAttentionModule",
           "DAModule", "DAModuleSeed", "danet", "PAM_Module", "CAM_Module"]


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


def _init_seed_weights(module: nn.Module) -> None:
    """External-Attention-pytorch's init_weights: Linear weights N(0, 0.001),
    biases zero (and its conv / BatchNorm rules, for the modules it names)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


class _SeedHeads(nn.Module):
    """What ScaledDotProductAttention and its simplified twin share: the
    attention product, explicit, in the original's order, and the output."""

    def attend(self, q, k, v, attention_mask=None, attention_weights=None):
        """(b, h, nq, d_v) from q (b, h, nq, d_k), k (b, h, nk, d_k), v (b, h, nk, d_v)."""
        att = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)
        if attention_weights is not None:
            att = att * attention_weights
        if attention_mask is not None:
            att = att.masked_fill(attention_mask, -math.inf)
        att = self.dropout(torch.softmax(att, -1))
        return torch.matmul(att, v)

    def merge_heads(self, out):
        """fc_o of the heads' outputs (b, h, nq, d_v), concatenated per query."""
        b_s, _, nq, _ = out.shape
        return self.fc_o(out.permute(0, 2, 1, 3).contiguous().view(b_s, nq, self.h * self.d_v))

    def forward(self, queries, keys, values, attention_mask=None, attention_weights=None):
        q, k, v = self.project(queries, keys, values)
        return self.merge_heads(self.attend(q, k, v, attention_mask, attention_weights))


class ScaledDotProductAttention(_SeedHeads):
    """External-Attention-pytorch ``ScaledDotProductAttention(d_model, d_k, d_v, h,
    dropout=.1)``."""

    def __init__(self, d_model, d_k, d_v, h, dropout=.1):
        super().__init__()
        self.fc_q = nn.Linear(d_model, h * d_k)
        self.fc_k = nn.Linear(d_model, h * d_k)
        self.fc_v = nn.Linear(d_model, h * d_v)
        self.fc_o = nn.Linear(h * d_v, d_model)
        self.dropout = nn.Dropout(dropout)
        self.d_model, self.d_k, self.d_v, self.h = d_model, d_k, d_v, h
        self.init_weights()

    def init_weights(self):
        _init_seed_weights(self)

    def project(self, queries, keys, values):
        """q, k, v as (b, h, tokens, d)."""
        b_s, nq, nk = queries.shape[0], queries.shape[1], keys.shape[1]
        q = self.fc_q(queries).view(b_s, nq, self.h, self.d_k).permute(0, 2, 1, 3)
        k = self.fc_k(keys).view(b_s, nk, self.h, self.d_k).permute(0, 2, 1, 3)
        v = self.fc_v(values).view(b_s, nk, self.h, self.d_v).permute(0, 2, 1, 3)
        return q, k, v


class SimplifiedScaledDotProductAttention(_SeedHeads):
    """External-Attention-pytorch ``SimplifiedScaledDotProductAttention(d_model, h,
    dropout=.1)``."""

    def __init__(self, d_model, h, dropout=.1):
        super().__init__()
        self.d_model, self.d_k, self.d_v, self.h = d_model, d_model // h, d_model // h, h
        self.fc_o = nn.Linear(h * self.d_v, d_model)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self):
        _init_seed_weights(self)

    def project(self, queries, keys, values):
        """q, k, v as (b, h, tokens, d): views of the inputs."""
        b_s, nq, nk = queries.shape[0], queries.shape[1], keys.shape[1]
        q = queries.view(b_s, nq, self.h, self.d_k).permute(0, 2, 1, 3)
        k = keys.view(b_s, nk, self.h, self.d_k).permute(0, 2, 1, 3)
        v = values.view(b_s, nk, self.h, self.d_v).permute(0, 2, 1, 3)
        return q, k, v


class MultiHeadSelfAttention(nn.Module):
    """Seed 000's ``MultiHeadSelfAttention(embed_size, heads)``: the inputs
    split into heads unprojected (the values/keys/queries Linears exist, as
    state, but the forward never calls them), then fc_out."""

    def __init__(self, embed_size, heads):
        super().__init__()
        self.embed_size = embed_size
        self.heads = heads
        self.head_dim = embed_size // heads
        assert self.head_dim * heads == embed_size, "Embedding size needs to be divisible by heads"
        self.values = nn.Linear(self.head_dim, embed_size, bias=False)
        self.keys = nn.Linear(self.head_dim, embed_size, bias=False)
        self.queries = nn.Linear(self.head_dim, embed_size, bias=False)
        self.fc_out = nn.Linear(embed_size, embed_size)

    def attend(self, q, k, v, mask):
        """(n, tokens, heads, head_dim) from q, k, v of that layout."""
        energy = torch.einsum("nqhd,nkhd->nhqk", [q, k])
        if mask is not None:
            energy = energy.masked_fill(mask == 0, float("-1e20"))
        attention = torch.softmax(energy / (self.embed_size ** (1 / 2)), dim=3)
        return torch.einsum("nhql,nlhd->nqhd", [attention, v])

    def split_heads(self, values, keys, query):
        """q, k, v as (n, tokens, heads, head_dim)."""
        n = query.shape[0]
        return (query.reshape(n, query.shape[1], self.heads, self.head_dim),
                keys.reshape(n, keys.shape[1], self.heads, self.head_dim),
                values.reshape(n, values.shape[1], self.heads, self.head_dim))

    def merge_heads(self, out):
        """fc_out of the heads' outputs (n, tokens, heads, head_dim)."""
        return self.fc_out(out.reshape(out.shape[0], out.shape[1], self.embed_size))

    def forward(self, values, keys, query, mask):
        q, k, v = self.split_heads(values, keys, query)
        return self.merge_heads(self.attend(q, k, v, mask))


class PositionAttentionModule(nn.Module):
    """External-Attention-pytorch DANet ``PositionAttentionModule(d_model=512,
    kernel_size=3, H=7, W=7)``: (B, C, H, W) -> (B, H*W, C)."""

    def __init__(self, d_model=512, kernel_size=3, H=7, W=7):
        super().__init__()
        self.cnn = nn.Conv2d(d_model, d_model, kernel_size=kernel_size,
                             padding=(kernel_size - 1) // 2)
        self.pa = ScaledDotProductAttention(d_model, d_k=d_model, d_v=d_model, h=1)

    def forward(self, x):
        bs, c, h, w = x.shape
        y = self.cnn(x).view(bs, c, -1).permute(0, 2, 1)
        return self.pa(y, y, y)


class ChannelAttentionModule(nn.Module):
    """External-Attention-pytorch DANet ``ChannelAttentionModule(d_model=512,
    kernel_size=3, H=7, W=7)``: (B, C, H, W) -> (B, C, H*W)."""

    def __init__(self, d_model=512, kernel_size=3, H=7, W=7):
        super().__init__()
        self.cnn = nn.Conv2d(d_model, d_model, kernel_size=kernel_size,
                             padding=(kernel_size - 1) // 2)
        self.pa = SimplifiedScaledDotProductAttention(H * W, h=1)

    def forward(self, x):
        bs, c, h, w = x.shape
        y = self.cnn(x).view(bs, c, -1)
        return self.pa(y, y, y)


class DAModule(nn.Module):
    """External-Attention-pytorch ``DAModule(d_model=512, kernel_size=3, H=7,
    W=7)``: position + channel attention, ``p + c``. Its branches are built
    with d_model=512, H=W=7 whatever the arguments (as upstream)."""

    def __init__(self, d_model=512, kernel_size=3, H=7, W=7):
        super().__init__()
        self.position_attention_module = PositionAttentionModule(d_model=512, kernel_size=3,
                                                                 H=7, W=7)
        self.channel_attention_module = ChannelAttentionModule(d_model=512, kernel_size=3,
                                                               H=7, W=7)

    def combine(self, x, p_out, c_out):
        return p_out + c_out

    def forward(self, input):
        bs, c, h, w = input.shape
        p_out = self.position_attention_module(input).permute(0, 2, 1).view(bs, c, h, w)
        c_out = self.channel_attention_module(input).view(bs, c, h, w)
        return self.combine(input, p_out, c_out)


class DAModuleSeed(DAModule):
    """Seed 002's DAModule: ``(x + 0.5 p) + (x + 0.2 c)``."""

    def combine(self, x, p_out, c_out):
        return (x + 0.5 * p_out) + (x + 0.2 * c_out)


def danet(d_model: int, kernel_size: int = 3, H: int = 7, W: int = 7, cls=DAModule) -> nn.Module:
    """A DAModule (``cls``) whose branches have these sizes, as users' copies
    that pass the constructor's arguments on build it."""
    module = cls.__new__(cls)
    nn.Module.__init__(module)  # not cls(): its branches would be built at 512 channels first
    module.position_attention_module = PositionAttentionModule(d_model, kernel_size, H, W)
    module.channel_attention_module = ChannelAttentionModule(d_model, kernel_size, H, W)
    return module


class PAM_Module(nn.Module):
    """junfu1115/DANet ``PAM_Module(in_dim)``: position attention."""

    def __init__(self, in_dim):
        super().__init__()
        self.chanel_in = in_dim
        self.query_conv = nn.Conv2d(in_channels=in_dim, out_channels=in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_channels=in_dim, out_channels=in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_channels=in_dim, out_channels=in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        m_batchsize, C, height, width = x.size()
        proj_query = self.query_conv(x).view(m_batchsize, -1, width * height).permute(0, 2, 1)
        proj_key = self.key_conv(x).view(m_batchsize, -1, width * height)
        attention = self.softmax(torch.bmm(proj_query, proj_key))
        proj_value = self.value_conv(x).view(m_batchsize, -1, width * height)
        out = torch.bmm(proj_value, attention.permute(0, 2, 1)).view(m_batchsize, C, height, width)
        return self.gamma * out + x


class CAM_Module(nn.Module):
    """junfu1115/DANet ``CAM_Module(in_dim)``: channel attention."""

    def __init__(self, in_dim):
        super().__init__()
        self.chanel_in = in_dim
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        m_batchsize, C, height, width = x.size()
        proj_query = x.view(m_batchsize, C, -1)
        proj_key = x.view(m_batchsize, C, -1).permute(0, 2, 1)
        energy = torch.bmm(proj_query, proj_key)
        energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
        attention = self.softmax(energy_new)
        out = torch.bmm(attention, x.view(m_batchsize, C, -1)).view(m_batchsize, C, height, width)
        return self.gamma * out + x
