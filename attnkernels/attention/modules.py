"""Drop-in attention modules: each is its reference class (same constructor,
submodules and state_dict keys) whose attention product goes to
``attention_core`` (or, token-major, ``masked_attention``) with the module's
``path`` (None: by device; see ``functional.pick_path``). The projections and
convolutions stay the original submodules, called as they are (hooks on them
run)."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._core.modules import RoutedModule
from . import reference as ref
from .blockwise import blockwise_attention
from .channel import channel_attention
from .functional import PATHS, attention_core, masked_attention, pick_path

__all__ = ["DotProductAttention", "UltralyticsAttention", "UltralyticsAreaAttention",
           "ScaledDotProductAttention", "SimplifiedScaledDotProductAttention",
           "MultiHeadSelfAttention", "PAM_Module", "CAM_Module"]


class DotProductAttention(RoutedModule):
    """Root of the drop-in attention modules. ``path``: ``"explicit"``,
    ``"sdpa"``, ``"blockwise"`` or None (by device), per module."""

    path: Optional[str] = None
    PATHS: Tuple[str, ...] = PATHS        # the paths this class takes
    WHOLE_NUMBERS: Tuple[str, ...] = ()   # those of them that are counts

    def __setattr__(self, name, value):
        if name == "path" and value is not None and value not in self.PATHS:
            raise ValueError(f"path must be one of {self.PATHS} or None, got {value!r}")
        super().__setattr__(name, value)

    def scale_of(self) -> float:
        raise NotImplementedError

    def resolved_path(self, x: torch.Tensor, dropout: bool = False,
                      head_dim_innermost: Optional[bool] = None) -> str:
        """The module's ``path``, or ``pick_path``'s for this input (x on the
        product's device; autograd runs if x or a parameter asks for it)."""
        if self.path is not None:
            return self.path
        grad = torch.is_grad_enabled() and (x.requires_grad or any(
            p.requires_grad for p in self.parameters()))
        return pick_path(x, grad, dropout, head_dim_innermost)

    def reference_forward(self, *args):
        """The original's forward, whole (the explicit path)."""
        return super(DotProductAttention, self).forward(*args)

    def gate_spec(self):
        """{} when the counts the forward reads are positive ints (convert's
        check), else the reason."""
        for name in self.WHOLE_NUMBERS:
            value = getattr(self, name, None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"its {name} is {value!r}, not a positive int"
        return {}



class _Ultralytics(DotProductAttention):
    """Channels-first q, k, v (B, heads, d, N): the product through ``attention_core``."""

    def attend(self, q, k, v):
        return attention_core(q, k, v, self.scale_of(), self.path)

    def probe_channels(self) -> Optional[int]:
        return self.num_heads * self.head_dim


class UltralyticsAttention(_Ultralytics, ref.UltralyticsAttention):
    """Ultralytics ``Attention(dim, num_heads=8, attn_ratio=0.5)`` (PSA, C2PSA)."""

    ADOPTED_ATTRS = ("num_heads", "head_dim", "key_dim", "scale")
    WHOLE_NUMBERS = ("num_heads", "head_dim", "key_dim")

    def scale_of(self) -> float:
        return self.scale  # key_dim ** -0.5, as the original reads it

    def gate_spec(self):
        why = super().gate_spec()
        if not why and not isinstance(getattr(self, "scale", None), float):
            return f"its scale is {getattr(self, 'scale', None)!r}, not a float"
        return why


class UltralyticsAreaAttention(_Ultralytics, ref.UltralyticsAreaAttention):
    """Ultralytics ``AAttn(dim, num_heads, area=1)`` (A2C2f)."""

    ADOPTED_ATTRS = WHOLE_NUMBERS = ("area", "num_heads", "head_dim", "all_head_dim")

    def scale_of(self) -> float:
        return self.head_dim ** -0.5

    def gate_spec(self):
        if "all_head_dim" not in vars(self) and isinstance(getattr(self, "head_dim", None), int) \
                and isinstance(getattr(self, "num_heads", None), int):
            # checkpoints older than the attribute (upstream's __setstate__ adds it so)
            self.all_head_dim = self.head_dim * self.num_heads
        return super().gate_spec()

    def probe_size(self) -> Tuple[int, int]:
        return (4, 2 * self.area)  # N = 8 * area tokens: whole bands



class _TokenMajor(DotProductAttention):
    """The External-Attention-pytorch and seed classes: inputs (batch, tokens,
    d_model). On the ``explicit`` path the forward is the original's, whole;
    on ``sdpa`` the product goes to ``masked_attention``."""

    DROPOUT = True  # the module's ``dropout`` acts on the attention weights

    def resolved_path(self, queries: torch.Tensor) -> str:
        dropout = self.DROPOUT and self.training and self.dropout.p > 0
        return super().resolved_path(queries, dropout, self.head_dim_innermost(queries))

    def head_dim_innermost(self, queries: torch.Tensor) -> bool:
        """Whether q's head dimension will be innermost: the queries' own
        layout, split into heads (the projected classes override)."""
        return queries.stride(-1) == 1

    def gate_spec(self):
        why = super().gate_spec()
        dropout = getattr(self, "dropout", None)
        if not why and self.DROPOUT and type(dropout) is not nn.Dropout:
            return f"its dropout is {type(dropout).__name__}, not nn.Dropout"
        return why

    def probe_args(self, generator: torch.Generator) -> tuple:
        """convert's probe (float64): queries and keys of different lengths, a
        mask with one query fully masked."""
        b, nq, nk, d = 2, 5, 7, self.probe_channels()
        q, kv = (torch.randn(b, n, d, generator=generator, dtype=torch.float64) for n in (nq, nk))
        masked = torch.rand(b, 1, nq, nk, generator=generator) < 0.3
        masked[0, 0, 1] = True
        return q, kv, kv, masked


class _ExternalAttention(_TokenMajor):
    """(Simplified)ScaledDotProductAttention's forward on either path."""

    ADOPTED_ATTRS = WHOLE_NUMBERS = ("d_model", "d_k", "d_v", "h")

    def scale_of(self) -> float:
        return 1 / math.sqrt(self.d_k)

    def probe_channels(self) -> Optional[int]:
        return self.d_model

    def project_fused(self, queries, keys, values):
        return self.project(queries, keys, values)

    def forward(self, queries, keys, values, attention_mask=None, attention_weights=None):
        path = self.resolved_path(queries)
        # weights multiply the scores: no SDPA argument does that; blockwise takes no mask
        if path == "explicit" or attention_weights is not None or (
                path == "blockwise" and attention_mask is not None):
            return self.reference_forward(queries, keys, values, attention_mask,
                                          attention_weights)
        q, k, v = self.project_fused(queries, keys, values)
        dropout_p = self.dropout.p if self.training else 0.0
        if path == "blockwise":
            out = blockwise_attention(q, k, v, self.scale_of(), dropout_p)
        else:
            out = masked_attention(q, k, v, self.scale_of(), attention_mask, dropout_p=dropout_p)
        return self.merge_heads(out)


class ScaledDotProductAttention(_ExternalAttention, ref.ScaledDotProductAttention):
    """External-Attention-pytorch ``ScaledDotProductAttention(d_model, d_k, d_v, h,
    dropout=.1)``; self-attention (queries, keys and values one tensor) projects
    q, k and v with one GEMM."""

    def head_dim_innermost(self, queries):
        return True  # fc_q's output

    def project_fused(self, queries, keys, values):
        if not (queries is keys and keys is values):
            return self.project(queries, keys, values)
        b_s, n = queries.shape[:2]
        w = torch.cat([self.fc_q.weight, self.fc_k.weight, self.fc_v.weight])
        bias = torch.cat([self.fc_q.bias, self.fc_k.bias, self.fc_v.bias])
        hk, hv = self.h * self.d_k, self.h * self.d_v
        q, k, v = F.linear(queries, w, bias).split([hk, hk, hv], dim=-1)
        return (q.view(b_s, n, self.h, self.d_k).transpose(1, 2),
                k.view(b_s, n, self.h, self.d_k).transpose(1, 2),
                v.view(b_s, n, self.h, self.d_v).transpose(1, 2))


class SimplifiedScaledDotProductAttention(_ExternalAttention,
                                          ref.SimplifiedScaledDotProductAttention):
    """External-Attention-pytorch ``SimplifiedScaledDotProductAttention(d_model, h,
    dropout=.1)``."""


class MultiHeadSelfAttention(_TokenMajor, ref.MultiHeadSelfAttention):
    """Seed 000's ``MultiHeadSelfAttention(embed_size, heads)``: the mask's
    -1e20 fill reproduced by ``masked_attention``."""

    ADOPTED_ATTRS = WHOLE_NUMBERS = ("embed_size", "heads", "head_dim")
    DROPOUT = False

    def scale_of(self) -> float:
        return 1 / self.embed_size ** (1 / 2)

    def probe_channels(self) -> Optional[int]:
        return self.embed_size

    def forward(self, values, keys, query, mask):
        path = self.resolved_path(query)
        if path == "explicit" or (path == "blockwise" and mask is not None):
            return self.reference_forward(values, keys, query, mask)
        q, k, v = (t.transpose(1, 2) for t in self.split_heads(values, keys, query))
        if path == "blockwise":
            out = blockwise_attention(q, k, v, self.scale_of())
        else:
            masked = None if mask is None else mask == 0
            out = masked_attention(q, k, v, self.scale_of(), masked, fill=-1e20)
        return self.merge_heads(out.transpose(1, 2))

    def probe_args(self, generator):
        q, kv, _, masked = super().probe_args(generator)
        return kv, kv, q, (~masked).to(torch.int64)  # (values, keys, query, mask): 0 masks


class _DANetOfficial(DotProductAttention):
    """junfu1115/DANet's modules: ``gamma * attention(x) + x`` as one addcmul;
    on the ``explicit`` path the original's forward, whole."""

    def gamma_residual(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, self.gamma, out)

    def gate_spec(self):
        gamma = getattr(self, "gamma", None)
        if not isinstance(gamma, nn.Parameter) or gamma.numel() != 1:
            return "its gamma is not a one-element parameter"
        if not (isinstance(self.softmax, nn.Softmax) and self.softmax.dim in (-1, 2)):
            return "its softmax is not over the last dimension"
        return {}

    @staticmethod
    def probe_prepare(*copies: nn.Module) -> None:
        """gamma starts at 0, which hides the attention: the probe's copies get
        another (the same in each)."""
        for m in copies:
            with torch.no_grad():
                m.gamma.fill_(0.7)


class PAM_Module(_DANetOfficial, ref.PAM_Module):
    """junfu1115/DANet ``PAM_Module(in_dim)``: ``softmax(q^T k)`` over the pixels
    through SDPA (scale 1), q, k, v as (B, H*W, d) views."""

    def probe_channels(self) -> Optional[int]:
        return self.query_conv.in_channels

    def forward(self, x):
        path = self.resolved_path(x, head_dim_innermost=False)  # conv outputs: pixels innermost
        if path == "explicit":
            return self.reference_forward(x)
        b, c, h, w = x.shape
        q, k, v = (conv(x).view(b, -1, h * w).transpose(1, 2)
                   for conv in (self.query_conv, self.key_conv, self.value_conv))
        core = blockwise_attention if path == "blockwise" else masked_attention
        out = core(q, k, v, 1.0).transpose(1, 2).reshape(b, c, h, w)
        return self.gamma_residual(out, x)


class CAM_Module(_DANetOfficial, ref.CAM_Module):
    """junfu1115/DANet ``CAM_Module(in_dim)``. By default (and ``path =
    "fused"``) one op that keeps only x and the C x C attention for backward
    (``channel.channel_attention``; a channels_last x is first copied to
    NCHW, whose (B, C, H*W) view the original's forward needs). ``"sdpa"``:
    ``softmax(max(E) - E)`` is ``softmax(-E)`` (a softmax ignores a per-row
    shift), so SDPA with scale -1 over the channels as tokens; ``"explicit"``:
    the original's forward."""

    PATHS = PATHS + ("fused",)

    def probe_channels(self) -> Optional[int]:
        return 6

    def forward(self, x):
        # fused by default, every device: on the CPU at 8x256x32x32 a training step
        # 1.34x eager (bench/results/cot-cam-cpu-2026-12-08); SDPA there, with the
        # pixels as a 1024-wide head dimension, 0.79x (attention-seeds-cpu-2026-12-07)
        path = self.path or "fused"
        if path == "explicit":
            return self.reference_forward(x)
        if path == "fused":
            return channel_attention(x, self.gamma)
        b, c, h, w = x.shape
        tokens = x.reshape(b, c, h * w)
        core = blockwise_attention if path == "blockwise" else masked_attention
        return self.gamma_residual(core(tokens, tokens, tokens, -1.0).view(b, c, h, w), x)
