"""Scalar activations and gates for Triton kernels; codes match
attnkernels/reference/_layers.py and csrc/common/gate_math.h."""
import torch
import triton
import triton.language as tl


@triton.jit
def sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def clamp06(r):
    """clamp(r, 0, 6) that keeps NaN, like torch's relu6."""
    r = tl.where(r < 0.0, 0.0, r)
    return tl.where(r > 6.0, 6.0, r)


@triton.jit
def activation_forward(h, ACT: tl.constexpr):
    if ACT == 1:
        return tl.where(h < 0, 0.0, h).to(h.dtype)
    elif ACT == 2:
        return h * sigmoid(h)
    elif ACT == 3:
        return h * clamp06(h + 3.0) / 6.0
    else:
        return h


@triton.jit
def activation_grad(h, ACT: tl.constexpr):
    if ACT == 1:
        return tl.where(h > 0, 1.0, 0.0).to(h.dtype)
    elif ACT == 2:
        s = sigmoid(h)
        return s * (1.0 + h * (1.0 - s))
    elif ACT == 3:
        return tl.where(h < -3.0, 0.0, tl.where(h <= 3.0, (2.0 * h + 3.0) / 6.0, 1.0)).to(h.dtype)
    else:
        return tl.full(h.shape, 1.0, h.dtype)


@triton.jit
def gate_forward(z, GATE: tl.constexpr):
    if GATE == 1:
        return clamp06(z + 3.0) / 6.0
    else:
        return sigmoid(z)


@triton.jit
def gate_grad(z, GATE: tl.constexpr):
    if GATE == 1:
        return tl.where((z > -3.0) & (z < 3.0), 1.0 / 6.0, 0.0).to(z.dtype)
    else:
        g = sigmoid(z)
        return g * (1.0 - g)


def acc_dtype(x: torch.Tensor):
    """(torch, triton) accumulate dtypes: fp64 for fp64 input, else fp32."""
    return (torch.float64, tl.float64) if x.dtype == torch.float64 else (torch.float32, tl.float32)


def layout(x: torch.Tensor):
    """(channel stride, position stride) of a NCHW- or channels_last-dense x."""
    C, HW = x.shape[1], x.shape[2] * x.shape[3]
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return 1, C
    return HW, 1
