"""The attention product of the detection models' attention modules, in their
layout (tokens last: q, k of shape (..., d_k, N), v of (..., d_v, N)), by one
of three paths that compute the same function:

  explicit  the originals' operations: ``A = softmax((q * scale)^T k)`` as an
            N x N matrix per head, then ``v A^T``; autograd keeps A (and the
            scaled q) for backward;
  sdpa      ``torch.nn.functional.scaled_dot_product_attention`` on the
            transposed views, with the same scale: on a GPU its flash /
            memory-efficient kernels never hold A; on the CPU, its fused kernel.
  blockwise ``blockwise.blockwise_attention``: by blocks of queries with
            library GEMMs, the softmax recomputed in backward and the dropout
            mask drawn again: for the CPU with dropout, which SDPA's CPU
            kernel does not take.

``path=None`` picks by device, mode and layout (see ``pick_path``).

``masked_attention`` is the token-major core (q, k, v as (..., tokens, d)) of
the External-Attention-pytorch and seed classes, with their two mask
semantics reproduced through SDPA's arguments."""
import math
from typing import Optional

import torch
import torch.nn.functional as F

from .blockwise import blockwise_attention

__all__ = ["attention_core", "masked_attention", "pick_path"]

PATHS = ("explicit", "sdpa", "blockwise")


def pick_path(q: torch.Tensor, training: bool, dropout: bool = False,
              head_dim_innermost: Optional[bool] = None) -> str:
    """The path for these operands (q as ``attention_core`` takes it, or
    one on q's device with ``head_dim_innermost`` given), by device, from
    measurements (``python -m bench.attention``):
    - CUDA: ``sdpa`` (flash / memory-efficient kernels, no N x N matrix), but
      ``explicit`` where deterministic algorithms are demanded and autograd
      will run (the memory-efficient kernel's backward is not deterministic);
    - CPU (bench/results/attention-cpu-2026-12-07, 2-core AMD EPYC, batch 8 at
      640): ``sdpa`` for a training step (1.03-1.74x, a third to a quarter of
      the peak memory where N is 400 per area) and for inference where the head
      dimension is q's innermost one (YOLO12's area-split AAttn: 2.1x);
      ``explicit`` for inference where the tokens are innermost (YOLO11's
      Attention, AAttn with one area: SDPA 0.73-0.87x, it copies q, k, v first);
      but ``blockwise`` where ``dropout`` acts on the attention weights
      (SDPA has no CPU kernel with dropout: its math fallback keeps more than
      the original does);
    - elsewhere ``explicit``."""
    if q.device.type == "cuda":
        return "explicit" if training and torch.are_deterministic_algorithms_enabled() else "sdpa"
    if q.device.type == "cpu":
        if dropout:
            return "blockwise"
        if head_dim_innermost is None:
            head_dim_innermost = q.stride(-2) == 1
        return "sdpa" if training or head_dim_innermost else "explicit"
    return "explicit"


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                   path: Optional[str] = None) -> torch.Tensor:
    """``v softmax((q * scale)^T k)^T`` per head: (..., d_v, N) from q, k of
    (..., d_k, N) and v of (..., d_v, N). ``path``: ``"explicit"``,
    ``"sdpa"`` or None (``pick_path``)."""
    if path is None:
        path = pick_path(q, torch.is_grad_enabled() and (q.requires_grad or k.requires_grad
                                                         or v.requires_grad))
    if path == "explicit":
        attn = ((q * scale).transpose(-2, -1) @ k).softmax(dim=-1)
        return v @ attn.transpose(-2, -1)
    if path == "sdpa":
        out = F.scaled_dot_product_attention(q.transpose(-2, -1), k.transpose(-2, -1),
                                             v.transpose(-2, -1), scale=scale)
        return out.transpose(-2, -1)
    if path == "blockwise":
        out = blockwise_attention(q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1),
                                  scale)
        return out.transpose(-2, -1)
    raise ValueError(f"path must be one of {PATHS} or None, got {path!r}")


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     masked: Optional[torch.Tensor] = None, fill: float = -math.inf,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(s) v`` through SDPA, q (..., nq, d_k), k (..., nk, d_k), v
    (..., nk, d_v), where s is ``q k^T * scale`` with the entries where
    ``masked`` (bool, broadcastable to (..., nq, nk)) is True set to ``fill``
    before the softmax, as the originals' ``masked_fill`` does. A masked
    entry's weight is then exactly 0 (SDPA's boolean mask) unless a query has
    every key masked:
      -inf  softmax of -inf only: NaN, as in the original (SDPA gives 0);
      finite (-1e20): equal scores, so the mean of the values (and no
            gradient to q or k), as in the original; a fill the dtype cannot
            hold fails as the original's masked_fill does.
    ``dropout_p`` drops attention weights (SDPA's random numbers; -inf fill only)."""
    if masked is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
    if masked.dtype != torch.bool:
        raise TypeError(f"masked must be a bool tensor, got {masked.dtype}")
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=~masked, dropout_p=dropout_p,
                                         scale=scale)
    every_key = masked.all(-1, keepdim=True)
    if fill == -math.inf:
        return out.masked_fill(every_key, math.nan)
    if dropout_p:
        raise ValueError("a finite fill takes no dropout (no original combines them)")
    if q.is_floating_point() and abs(fill) > torch.finfo(q.dtype).max:  # as masked_fill fails
        raise RuntimeError(f"value cannot be converted to type {q.dtype} without overflow")
    return torch.where(every_key, v.mean(-2, keepdim=True), out)
