"""EMA's attention as a function of x and its 3x3 branch: validates the
arguments and picks the backend."""
from typing import List, Optional

import torch
from torch.nn import functional as torch_F

from .._core import backend as _backend
from .._core.functional import check_activation_4d, check_param, cuda_kernel_reasons
from .._core.ops import call_forward
from . import reference

__all__ = ["efficient_multiscale_attention"]

_BACKEND_REASONS = cuda_kernel_reasons("ema_forward", "EMA")


def efficient_multiscale_attention(x: torch.Tensor, x2: torch.Tensor,
                                   conv1x1_weight: torch.Tensor,
                                   conv1x1_bias: Optional[torch.Tensor] = None,
                                   gn_weight: Optional[torch.Tensor] = None,
                                   gn_bias: Optional[torch.Tensor] = None, groups: int = 32,
                                   eps: float = 1e-5, *, backend: Optional[str] = None,
                                   family_reasons: List[str] = ()) -> torch.Tensor:
    """EMA (Efficient Multi-scale Attention) of x (N, C, H, W) in ``groups``
    groups of g = C / groups channels, given its 3x3 branch
    ``x2 = conv3x3(x.reshape(N * groups, g, H, W))`` (the convolution stays
    the library's). conv1x1_weight (g, g, 1, 1) and conv1x1_bias (g,): the 1x1
    conv over the strip means; gn_weight, gn_bias (g,) and eps: the GroupNorm
    with one group per channel (None: no affine). x and x2 NCHW or
    channels_last, each. backend: as for ``squeeze_excite``.

    Passes: forward, one task per group reads x and x2 once from memory (the
    group's later sweeps find them in cache) and writes y; backward, one read
    of dy, x and x2, writing dx and dx2 (then the 3x3 conv's backward and
    autograd's sum of the two x gradients). Saved for backward: x, x2 (which
    the conv's backward keeps anyway) and (N*groups, H, W) plus per-group
    vectors; eager keeps about eight x-sized tensors."""
    check_activation_4d(x)
    check_activation_4d(x2)
    B, C, H, W = x.shape
    if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0 or C % groups:
        raise ValueError(f"groups ({groups!r}) must be a positive int dividing the channels ({C})")
    g = C // groups
    # as F.group_norm: more than one value per (sample, group)
    torch_F._verify_batch_size([B * groups, g, H, W])
    if tuple(x2.shape) != (B * groups, g, H, W):
        raise ValueError(f"x2 must have shape {(B * groups, g, H, W)} (conv3x3 of x's groups), "
                         f"got {tuple(x2.shape)}")
    check_param(x, conv1x1_weight, "conv1x1_weight", (g, g, 1, 1))
    for name, t in (("conv1x1_bias", conv1x1_bias), ("gn_weight", gn_weight),
                    ("gn_bias", gn_bias)):
        check_param(x, t, name, (g,))
    reasons = list(family_reasons)
    if x2.dtype != x.dtype or x2.device != x.device:
        reasons.append(f"x2 is {x2.dtype} on {x2.device}, x {x.dtype} on {x.device}")
    if not _backend.is_dense(x2):
        reasons.append("x2 is neither NCHW-contiguous nor channels_last")
    name = _backend.select(x, backend, reasons, _BACKEND_REASONS)
    if name == "reference":
        return reference.efficient_multiscale_attention(x, x2, conv1x1_weight, conv1x1_bias,
                                                        gn_weight, gn_bias, groups, eps)
    if name == "triton":
        from . import triton as _  # noqa: F401  (registers the *_triton ops)

        op = torch.ops.attnkernels.ema_forward_triton
    else:
        op = torch.ops.attnkernels.ema_forward
    return call_forward(op, (x, x2, conv1x1_weight, conv1x1_bias, gn_weight, gn_bias), groups,
                        float(eps))[0]
