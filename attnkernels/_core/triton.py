"""Scalar activations and gates for Triton kernels (codes in modes.py), and
the per-(n, c) tile loads and statistics the plane reductions share."""
import torch
import triton
import triton.language as tl

from .modes import Activation, Gate

# the codes as constants the kernels can read
_RELU = tl.constexpr(int(Activation.RELU))
_SILU = tl.constexpr(int(Activation.SILU))
_HARDSWISH = tl.constexpr(int(Activation.HARDSWISH))
_HARD_SIGMOID = tl.constexpr(int(Gate.HARD_SIGMOID))


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
    if ACT == _RELU:
        return tl.where(h < 0, 0.0, h).to(h.dtype)
    elif ACT == _SILU:
        return h * sigmoid(h)
    elif ACT == _HARDSWISH:
        return h * clamp06(h + 3.0) / 6.0
    else:
        return h


@triton.jit
def activation_grad(h, ACT: tl.constexpr):
    if ACT == _RELU:
        return tl.where(h > 0, 1.0, 0.0).to(h.dtype)
    elif ACT == _SILU:
        s = sigmoid(h)
        return s * (1.0 + h * (1.0 - s))
    elif ACT == _HARDSWISH:
        return tl.where(h < -3.0, 0.0, tl.where(h <= 3.0, (2.0 * h + 3.0) / 6.0, 1.0)).to(h.dtype)
    else:
        return tl.full(h.shape, 1.0, h.dtype)


@triton.jit
def gate_forward(z, GATE: tl.constexpr):
    if GATE == _HARD_SIGMOID:
        return clamp06(z + 3.0) / 6.0
    else:
        return sigmoid(z)


@triton.jit
def gate_grad(z, GATE: tl.constexpr):
    if GATE == _HARD_SIGMOID:
        # / 6 after the cast: a literal 1 / 6 is an fp32 constant, inexact for fp64
        return tl.where((z > -3.0) & (z < 3.0), 1.0, 0.0).to(z.dtype) / 6.0
    else:
        g = sigmoid(z)
        return g * (1.0 - g)


@triton.jit
def store_gate_and_grad(z, dg_ptr, g_ptr, dz_ptr, offs, mask, GATE: tl.constexpr):
    """A gate's backward step at offs: g = gate(z) and dz = dg * gate'(z), both stored."""
    dz = tl.load(dg_ptr + offs, mask=mask, other=0.0) * gate_grad(z, GATE)
    tl.store(g_ptr + offs, gate_forward(z, GATE), mask=mask)
    tl.store(dz_ptr + offs, dz, mask=mask)


def acc_dtype(x: torch.Tensor):
    """(torch, triton) accumulate dtypes: fp64 for fp64 input, else fp32."""
    return (torch.float64, tl.float64) if x.dtype == torch.float64 else (torch.float32, tl.float32)


def channels_last(x: torch.Tensor) -> bool:
    """Whether the kernels index x as channels_last (dense NHWC and not dense NCHW)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def strides_chw(x: torch.Tensor):
    """(channel, h, w) element strides of a NCHW- or channels_last-dense x."""
    C, H, W = x.shape[1:]
    return (1, W * C, C) if channels_last(x) else (H * W, W, 1)


@triton.jit
def element_chw(e, C, H, W, CHANNELS_LAST: tl.constexpr):
    """(n, c, h, w) of the flat element index e of a dense NCHW or NHWC tensor."""
    if CHANNELS_LAST:
        c = e % C
        w = (e // C) % W
        h = (e // (C * W)) % H
    else:
        w = e % W
        h = (e // W) % H
        c = (e // (H * W)) % C
    return e // (C * H * W), c, h, w


@triton.jit
def element_block(N, C, H, W, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    """This program's BLOCK flat elements of a dense (N, C, H, W) tensor of N
    elements in all: (e, e < N, n, c, h, w)."""
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    n, c, h, w = element_chw(e, C, H, W, CHANNELS_LAST)
    return e, e < N, n, c, h, w


def plane_blocks(x: torch.Tensor):
    """(BLOCK_C, BLOCK_P) of the per-(n, c) plane reductions (SimAM, NAM,
    Selective Kernel, CoT): channels along lanes for channels_last, positions
    for NCHW."""
    return (32, 32) if channels_last(x) else (4, 256)


def plane_grid(x: torch.Tensor, block_c: int):
    """A plane reduction's launch grid: (samples, channel blocks)."""
    return (x.shape[0], triton.cdiv(x.shape[1], block_c))


def layout(x: torch.Tensor):
    """(channel stride, position stride) of a NCHW- or channels_last-dense x."""
    C, HW = x.shape[1], x.shape[2] * x.shape[3]
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return 1, C
    return HW, 1


@triton.jit
def load_tile(ptr, base, c, cmask, p0, HW, stride_c, stride_p, ACC: tl.constexpr,
              BLOCK_P: tl.constexpr):
    """Values (BLOCK_C, BLOCK_P) of channels c at positions p0.. of the sample
    at base, in ACC; their mask and offsets."""
    p = p0 + tl.arange(0, BLOCK_P)
    m = cmask[:, None] & (p < HW)[None, :]
    offs = base + c[:, None].to(tl.int64) * stride_c + p[None, :].to(tl.int64) * stride_p
    return tl.load(ptr + offs, mask=m, other=0.0).to(ACC), m, offs


@triton.jit
def plane_mean_m2(x_ptr, base, c, cmask, HW, stride_c, stride_p, ACC: tl.constexpr,
                  BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Per channel c of the sample at base: the mean and the sum of squared
    deviations over the HW positions, exact per chunk of BLOCK_P positions,
    the chunks merged in order (Chan et al.)."""
    count = tl.zeros([BLOCK_C], ACC)
    mean = tl.zeros([BLOCK_C], ACC)
    m2 = tl.zeros([BLOCK_C], ACC)
    for p0 in range(0, HW, BLOCK_P):
        v, m, _ = load_tile(x_ptr, base, c, cmask, p0, HW, stride_c, stride_p, ACC, BLOCK_P)
        n = tl.sum(m.to(ACC), axis=1)
        chunk_mean = tl.sum(v, axis=1) / tl.maximum(n, 1.0)  # (masked channels: no 0 / 0)
        dev = tl.where(m, v - chunk_mean[:, None], 0.0)
        chunk_m2 = tl.sum(dev * dev, axis=1)
        total = count + n
        delta = chunk_mean - mean
        mean += delta * (n / tl.maximum(total, 1.0))
        m2 += chunk_m2 + delta * delta * (count * n / tl.maximum(total, 1.0))
        count = total
    return mean, m2
