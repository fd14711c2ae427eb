"""The gate networks' matrix products (the shared MLPs and 1x1 convs of SE's
weight gradients, CBAM's channel gate and Coordinate Attention's strips, ECA's
kernel gradient) and their sums over every element (conv bias gradients).

MKL's sgemm cuts its work by the thread count, and on some CPUs (an AMD EPYC
with MKL 2024.2 here) ``a @ b`` changes in its last bits with
``torch.set_num_threads``, even for a 12x7 by 7x24 product. On the CPU these
products run on ``attnkernels::gate_matmul`` (csrc/cpu/gate_matmul.cpp: fixed
tiles of 256 rows x 64 columns x a chunk of K, BLAS on one thread per tile,
the chunks' partial products summed in float64; a batch that shares one 2-D
operand is one product), whose bits do not depend on the thread count;
elsewhere on torch.matmul.
"""
from typing import Optional

import torch

from . import extension as _extension

# Read once, at import: no dispatcher lookups inside compiled regions.
_HAS_CPU_KERNEL = _extension.has_kernel("gate_matmul", "CPU")


def _ours(t: torch.Tensor) -> bool:
    """Whether the CPU kernel serves t's device and dtype."""
    return (_HAS_CPU_KERNEL and t.device.type == "cpu"
            and t.dtype in (torch.float32, torch.float64))


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for a (M, K) or (B, M, K) and b (K, N) or (B, K, N)."""
    if _ours(a) and a.dtype == b.dtype and a.dim() in (2, 3) and b.dim() in (2, 3):
        return torch.ops.attnkernels.gate_matmul(a, b)
    return torch.matmul(a, b)


def linear(inp: torch.Tensor, weight: torch.Tensor,
           bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(inp, weight, bias)`` on 2-D inp."""
    out = matmul(inp, weight.t())
    return out if bias is None else out + bias


def sum_all(t: torch.Tensor) -> torch.Tensor:
    """``t.sum()`` (0-D). On the CPU as products with ones, so that its bits do
    not depend on the thread count (a large ``t.sum()`` splits its terms
    between threads): rows of 256 elements summed, then the row sums (in
    chunks summed in float64, see the module's kernel)."""
    if not _ours(t):
        return t.sum()
    flat = t.reshape(-1)
    width = 256
    rows = flat.numel() // width
    sums = [flat[rows * width:].sum().reshape(1)]  # fewer than 256 terms: one thread sums them
    if rows:
        sums.append(matmul(flat[:rows * width].view(rows, width), flat.new_ones((width, 1)))[:, 0])
    partial = torch.cat(sums)
    return matmul(partial[None], partial.new_ones((partial.numel(), 1))).reshape(())


def _matmul_fake(a, b):
    batch = a.shape[:1] if a.dim() == 3 else b.shape[:1] if b.dim() == 3 else ()
    return a.new_empty((*batch, a.shape[-2], b.shape[-1]))


def register() -> None:
    """The fake of the compiled gate matmul (once the extension is loaded)."""
    torch.library.register_fake("attnkernels::gate_matmul")(_matmul_fake)
