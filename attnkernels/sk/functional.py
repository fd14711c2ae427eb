"""Selective Kernel attention as a function over branch outputs: validates its
arguments and picks the backend."""
from typing import Callable, List, Optional, Sequence

import torch

from .._core import backend as _backend
from .._core.functional import check_activation_4d, cuda_kernel_reasons
from .._core.ops import call_forward
from . import reference

__all__ = ["selective_kernel"]

MAX_BRANCHES = 8  # csrc/common/sk.h: kSKMaxBranches
_BACKEND_REASONS = cuda_kernel_reasons("sk_pool", "Selective Kernel")
# Under torch.compile, auto gives Selective Kernel to inductor as its reference
# decomposition (see se/functional.py; measured on skresnet18, docs/design.md).
INDUCTOR_FUSES = True


def _branch_reasons(branches: List[torch.Tensor]) -> List[str]:
    """Why the branches cannot share one fused call (empty: they can)."""
    x = branches[0]
    if len(branches) > MAX_BRANCHES:
        return [f"{len(branches)} branches: the fused kernels take at most {MAX_BRANCHES}"]
    if any(f.shape != x.shape or f.dtype != x.dtype or f.device != x.device
           or f.stride() != x.stride() for f in branches[1:]):
        return ["the branches differ in shape, dtype, device or memory layout"]
    return []


def selective_kernel(branches: Sequence[torch.Tensor],
                     gate: Callable[[torch.Tensor], torch.Tensor], *,
                     backend: Optional[str] = None,
                     family_reasons: List[str] = ()) -> torch.Tensor:
    """Selective Kernel attention over the branch outputs ``branches`` (K
    tensors (N, C, H, W), NCHW or channels_last, alike):
    ``s = mean_hw(sum_k branches[k])``, ``a = softmax over k of gate(s)``,
    ``out = sum_k a[:, k, :, None, None] * branches[k]``.

    gate: the module's gate network, (N, C) -> logits (N, K, C), run with the
    library's ops (and autograd) between the two fused passes. backend: as
    for ``squeeze_excite``.

    Passes: forward, one read of each branch for s, then one read of each
    branch and a write of out; backward, one read of dy and of each branch,
    writing each branch's gradient, then autograd adds the pool's gradient
    (dS / (H*W), broadcast) to each: a read and write of each. Saved for
    backward: the branches (which their convolutions' backward keeps anyway)
    and the (N, K, C) logits; no stacked (K, N, C, H, W) tensor, no sum."""
    branches = list(branches)
    if not branches:
        raise ValueError("branches is empty: Selective Kernel needs at least one branch")
    for k, f in enumerate(branches):
        try:
            check_activation_4d(f)
        except (TypeError, ValueError) as e:
            raise type(e)(f"branches[{k}]: {e}") from None
    x = branches[0]
    name = _backend.select(x, backend, list(family_reasons) + _branch_reasons(branches),
                           _BACKEND_REASONS, inductor_fuses=INDUCTOR_FUSES)
    if name == "reference":
        return reference.selective_kernel(branches, gate)
    if name == "triton":
        from . import triton as _  # noqa: F401  (registers the *_triton ops)

        suffix = "_triton"
    else:
        suffix = ""
    ops = torch.ops.attnkernels
    s = call_forward(getattr(ops, "sk_pool" + suffix), (branches,))
    logits = gate(s)
    if not isinstance(logits, torch.Tensor) or logits.shape != (x.shape[0], len(branches),
                                                                x.shape[1]):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"gate must return logits of shape (N, K, C) = "
                         f"{(x.shape[0], len(branches), x.shape[1])}, got {got}")
    return call_forward(getattr(ops, "sk_forward" + suffix), (branches, logits))
