"""The attention product of the detection models' attention modules, in their
layout (tokens last: q, k of shape (..., d_k, N), v of (..., d_v, N)), by one
of two paths that compute the same function:

  explicit  the originals' operations: ``A = softmax((q * scale)^T k)`` as an
            N x N matrix per head, then ``v A^T``; autograd keeps A (and the
            scaled q) for backward;
  sdpa      ``torch.nn.functional.scaled_dot_product_attention`` on the
            transposed views, with the same scale: on a GPU its flash /
            memory-efficient kernels never hold A; on the CPU, its fused kernel.

``path=None`` picks by device, mode and layout (see ``pick_path``)."""
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["attention_core", "pick_path"]

PATHS = ("explicit", "sdpa")


def pick_path(q: torch.Tensor, training: bool) -> str:
    """The path for these operands (q as ``attention_core`` takes it), by
    device, from measurements (``python -m bench.attention``):
    - CUDA: ``sdpa`` (flash / memory-efficient kernels, no N x N matrix), but
      ``explicit`` where deterministic algorithms are demanded and autograd
      will run (the memory-efficient kernel's backward is not deterministic);
    - CPU (bench/results/attention-cpu-2026-12-07, 2-core AMD EPYC, batch 8 at
      640): ``sdpa`` for a training step (1.03-1.74x, a third to a quarter of
      the peak memory where N is 400 per area) and for inference where the head
      dimension is q's innermost one (YOLO12's area-split AAttn: 2.1x);
      ``explicit`` for inference where the tokens are innermost (YOLO11's
      Attention, AAttn with one area: SDPA 0.73-0.87x, it copies q, k, v first);
    - elsewhere ``explicit``."""
    if q.device.type == "cuda":
        return "explicit" if training and torch.are_deterministic_algorithms_enabled() else "sdpa"
    if q.device.type == "cpu":
        return "sdpa" if training or q.stride(-2) == 1 else "explicit"
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
    raise ValueError(f"path must be one of {PATHS} or None, got {path!r}")
