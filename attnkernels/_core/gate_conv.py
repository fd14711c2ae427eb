"""The gate networks' small convolutions: same-padded (k // 2), stride 1, few
channels (CBAM's and Triplet's 2 -> 1 kxk convs, and their input gradients 1 -> 2).

PyTorch's CPU conv (oneDNN) is slow for these one- and two-channel convs, and
its weight gradient (convolution_backward) slower still, so on the CPU
(float32, float64) every one of them runs on ours (csrc/cpu/gate_conv.cpp:
register-blocked, summed in double, an AVX2 build of the same loops picked at
run time where the CPU has it). Measured on a 2-thread AMD EPYC (AVX2), 7x7,
median ms, by ``python -m bench.gate_conv``:

  shape (N, 2, rows, cols)    conv 2 -> 1       conv 1 -> 2       weight gradient
                              oneDNN  ours      oneDNN  ours      aten    ours
  (16, 2, 56, 256)             6.72   1.32       4.25   1.18      17.30   1.32
  (16, 2, 56, 56)              1.46   0.47       0.98   0.39       4.60   0.36
  (16, 2, 112, 112)            5.85   1.34       3.97   1.28      16.94   1.32
  (64, 2, 14, 1024)           21.63   5.34      15.35   5.01      47.16   4.51
  (128, 2, 7, 2048)           67.53  11.76      56.25  10.22     167.22  10.12

(build of e8c813e; single cells move by up to 30% between runs here).
Without AVX2 (ATTNKERNELS_CPU_BASELINE=1) ours take 2-2.5 times as long and
still beat oneDNN on every shape above (bench/results/gateconv-amd-2026-11-23/
has both tables). The kernels vectorise along the columns, so planes are given
with the longer side as columns. Ours are at least as accurate as oneDNN's
fp32 (which rounds ~10x more on these sums). Elsewhere (CUDA, half dtypes)
PyTorch's ops serve.
"""
import torch
import torch.nn.functional as F

from . import extension as _extension

# Read once, at import: no dispatcher lookups inside compiled regions.
_HAS_CPU_KERNELS = _extension.has_kernel("gate_conv2d", "CPU")


def _ours(t: torch.Tensor) -> bool:
    return _HAS_CPU_KERNELS and t.device.type == "cpu" and t.dtype in (torch.float32,
                                                                      torch.float64)


def _wide(t: torch.Tensor) -> bool:
    """Whether t (N, C, rows, cols) is worked on as is (else transposed)."""
    return t.shape[3] >= t.shape[2]


def same_conv2d(inp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(inp, weight, padding=k // 2)``, no bias; contiguous like it
    (the composite ops return these outputs, and their fakes say contiguous)."""
    if not _ours(inp):
        return F.conv2d(inp, weight, padding=weight.shape[-1] // 2)
    if _wide(inp):
        return torch.ops.attnkernels.gate_conv2d(inp.contiguous(), weight.contiguous())
    return torch.ops.attnkernels.gate_conv2d(
        inp.transpose(2, 3).contiguous(),
        weight.transpose(2, 3).contiguous()).transpose(2, 3).contiguous()


def same_conv2d_backward(grad: torch.Tensor, inp: torch.Tensor, weight: torch.Tensor):
    """(d inp, d weight) of ``same_conv2d(inp, weight)`` for the output gradient
    grad. d inp is the same conv of grad with the flipped, transposed kernel."""
    k = weight.shape[-1]
    d_inp = same_conv2d(grad, weight.flip(2, 3).transpose(0, 1))
    if not _ours(inp):
        d_weight = torch.ops.aten.convolution_backward(
            grad, inp, weight, None, [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], 1,
            [False, True, False])[1]
    elif _wide(inp):
        d_weight = torch.ops.attnkernels.gate_conv2d_weight_grad(grad.contiguous(),
                                                                 inp.contiguous(), k)
    else:
        d_weight = torch.ops.attnkernels.gate_conv2d_weight_grad(
            grad.transpose(2, 3).contiguous(), inp.transpose(2, 3).contiguous(), k).transpose(2, 3)
    return d_inp, d_weight


def _conv_fake(inp, weight):
    return inp.new_empty((inp.shape[0], weight.shape[0], inp.shape[2], inp.shape[3]))


def _weight_grad_fake(grad, inp, kernel_size):
    return inp.new_empty((grad.shape[1], inp.shape[1], kernel_size, kernel_size))


def register() -> None:
    """Fakes for the compiled gate convolutions (once the extension is loaded)."""
    torch.library.register_fake("attnkernels::gate_conv2d")(_conv_fake)
    torch.library.register_fake("attnkernels::gate_conv2d_weight_grad")(_weight_grad_fake)
