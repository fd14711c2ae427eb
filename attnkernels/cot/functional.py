"""CoT attention's two rewrites, as functions of the module's tensors: the
averaged last 1x1 conv (library) and the softmax gate (our kernels)."""
from typing import List, Optional

import torch
import torch.nn.functional as F

from .._core import backend as _backend
from .._core.functional import check_activation_4d, cuda_kernel_reasons
from . import op as cot_ops
from . import reference

__all__ = ["averaged_conv1x1", "cot_softmax_gate"]

_BACKEND_REASONS = cuda_kernel_reasons("cot_forward", "CoT attention")
# Under torch.compile, auto keeps our ops: CoTAttention(256) compiled, 8x256x32x32
# on the 2-core EPYC, with our gate or with inductor's fusion of the reference's
# softmax and multiply-add: 61.5 / 60.5 ms inference, 198 / 199 ms a training
# step (bench/results/cot-cam-cpu-2026-12-08); ours keeps no softmax output.
INDUCTOR_FUSES = False


def averaged_conv1x1(h: torch.Tensor, weight: torch.Tensor, bias, groups_of: int) -> torch.Tensor:
    """The mean over each output channel's ``groups_of`` consecutive outputs
    of the 1x1 conv ``(weight, bias)`` of h: one 1x1 conv with the averaged
    weight (out / groups_of, in, 1, 1) and bias, the same function (the mean
    is linear); gradients reach the original weight and bias through it."""
    out_channels = weight.shape[0] // groups_of
    w = weight.reshape(out_channels, groups_of, *weight.shape[1:]).mean(1)
    b = None if bias is None else bias.reshape(out_channels, groups_of).mean(1)
    return F.conv2d(h, w, b)


def _operand_reasons(att: torch.Tensor, v: torch.Tensor, k1: torch.Tensor) -> List[str]:
    """Why att, v and k1 cannot share one fused call (empty: they can): the
    kernels index them alike, as att's layout says (NCHW, or channels_last
    where att is channels_last-dense and not NCHW-dense)."""
    cl = not att.is_contiguous() and att.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    if any(t.shape != att.shape or t.dtype != att.dtype or t.device != att.device
           or not t.is_contiguous(memory_format=fmt) for t in (v, k1)):
        return ["att, v and k1 differ in shape, dtype, device or memory layout"]
    return []


def cot_softmax_gate(att: torch.Tensor, v: torch.Tensor, k1: torch.Tensor, *,
                     backend: Optional[str] = None,
                     family_reasons: List[str] = ()) -> torch.Tensor:
    """CoT attention's last step: ``k1 + softmax(att over H*W) * v`` for
    (N, C, H, W) tensors alike (NCHW or channels_last). backend: as for
    ``squeeze_excite``; operands that differ in shape, dtype or layout take
    the reference (auto) or raise (an explicit backend).

    Passes: forward, the plane's max and sum of exp(att - max), then y = k1
    + w v (on the CPU, NCHW, each plane read once from memory); backward, r =
    sum w dy v per (n, c), then datt = w (dy v - r) and dv = dy w; k1's
    gradient is dy. Saved for backward: att, v and two (N, C) statistics (no
    softmax output)."""
    for name, t in (("att", att), ("v", v), ("k1", k1)):
        try:
            check_activation_4d(t)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name}: {e}") from None
    name = _backend.select(att, backend, list(family_reasons) + _operand_reasons(att, v, k1),
                           _BACKEND_REASONS, inductor_fuses=INDUCTOR_FUSES)
    if name == "reference":
        return reference.cot_softmax_gate(att, v, k1)
    if name == "triton":
        from . import triton as triton_cot

        return triton_cot.cot_forward(att, v, k1)
    return cot_ops.cot_forward(att, v, k1)
