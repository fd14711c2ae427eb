"""The gate networks' small convolutions: same-padded (k // 2), stride 1, few
channels (CBAM's and Triplet's 2 -> 1 kxk convs, and their input gradients 1 -> 2).

PyTorch's CPU conv (oneDNN) is slow for one output channel on the thin planes
of late ResNet stages, and for the input gradient of such a conv. Measured on
this project's 2-thread machine, 7x7:

  conv 2 -> 1, (128, 2, 7, 2048)   oneDNN 55 ms   gate_conv2d 23 ms
  conv 2 -> 1, (64, 2, 14, 1024)   oneDNN 28 ms   gate_conv2d 13 ms
  conv 2 -> 1, (16, 2, 256, 56)    oneDNN 2.7 ms  gate_conv2d 3.8 ms
  input gradient, (16, 2, 256, 56) conv_backward 29 ms, conv2d of the flipped kernel 1.7 ms
  weight gradient, (128, 2, 7, 2048)  conv_backward 55 ms  gate_conv2d_weight_grad 18 ms

So on the CPU: planes with a side of at most 14 and one of at least 64 run on
``attnkernels::gate_conv2d`` (csrc/cpu/gate_conv.cpp, longer side as columns,
accumulated in double), other convs on F.conv2d; input gradients are always
a conv with the flipped kernel, weight gradients always
``attnkernels::gate_conv2d_weight_grad``. Both of ours are at least as
accurate as oneDNN's fp32 (which rounds ~10x more on these sums). Elsewhere
(CUDA, half dtypes) PyTorch's ops serve.
"""
import torch
import torch.nn.functional as F

from .. import _extension

# Read once, at import: no dispatcher lookups inside compiled regions.
_HAS_CPU_KERNELS = _extension.has_kernel("gate_conv2d", "CPU")


def _ours(t: torch.Tensor) -> bool:
    return _HAS_CPU_KERNELS and t.device.type == "cpu" and t.dtype in (torch.float32,
                                                                      torch.float64)


def _thin(t: torch.Tensor) -> bool:
    """Whether t (N, C, rows, cols) is a plane oneDNN is slow on (see above)."""
    return min(t.shape[2], t.shape[3]) <= 14 and max(t.shape[2], t.shape[3]) >= 64


def _wide(t: torch.Tensor) -> bool:
    """Whether t (N, C, rows, cols) is worked on as is (else transposed)."""
    return t.shape[3] >= t.shape[2]


def same_conv2d(inp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(inp, weight, padding=k // 2)``, no bias."""
    if not (_ours(inp) and _thin(inp)):
        return F.conv2d(inp, weight, padding=weight.shape[-1] // 2)
    if _wide(inp):
        return torch.ops.attnkernels.gate_conv2d(inp.contiguous(), weight.contiguous())
    return torch.ops.attnkernels.gate_conv2d(
        inp.transpose(2, 3).contiguous(), weight.transpose(2, 3).contiguous()).transpose(2, 3)


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
