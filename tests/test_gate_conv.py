"""The gate networks' CPU convolutions (attnkernels/_core/gate_conv.py) against PyTorch's, in float64."""

import pytest
import torch
import torch.nn.functional as F

from attnkernels._core import gate_conv
from utils import HAS_CPU, assert_same_bits_per_isa


pytestmark = pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")


def _reference_weight_grad(grad, inp, weight):
    k = weight.shape[-1]
    return torch.ops.aten.convolution_backward(grad, inp, weight, None, [1, 1], [k // 2, k // 2],
                                               [1, 1], False, [0, 0], 1, [False, True, False])[1]


# rows across tiles of 8 and columns across tiles of 256, register chunks and
# the one-by-one tail; planes smaller than the kernel
@pytest.mark.parametrize("shape,cout,k", [((2, 2, 9, 70), 1, 7), ((3, 1, 70, 5), 2, 3),
                                          ((1, 2, 4, 4), 1, 7), ((2, 2, 13, 6), 2, 5),
                                          ((1, 2, 17, 301), 1, 7), ((2, 1, 3, 2), 2, 7)])
def test_ops_match_pytorch(shape, cout, k):
    inp = torch.randn(shape, dtype=torch.float64)
    w = torch.randn(cout, shape[1], k, k, dtype=torch.float64)
    grad = torch.randn(shape[0], cout, *shape[2:], dtype=torch.float64)
    ops = torch.ops.attnkernels
    torch.testing.assert_close(ops.gate_conv2d(inp, w), F.conv2d(inp, w, padding=k // 2))
    torch.testing.assert_close(ops.gate_conv2d_weight_grad(grad, inp, k),
                               _reference_weight_grad(grad, inp, w))
    torch.library.opcheck(ops.gate_conv2d.default, (inp, w))
    torch.library.opcheck(ops.gate_conv2d_weight_grad.default, (grad, inp, k))


@pytest.mark.parametrize("shape", [(2, 2, 70, 9), (2, 2, 9, 70), (2, 2, 20, 30)])
def test_same_conv2d_and_its_backward_match_pytorch(shape):
    """Planes of either orientation (ours works on the longer side as columns)."""
    inp = torch.randn(shape, dtype=torch.float64).transpose(2, 3)  # a view, as Triplet's hc
    w = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    grad = torch.randn(inp.shape[0], 1, *inp.shape[2:], dtype=torch.float64)
    out = gate_conv.same_conv2d(inp, w)
    torch.testing.assert_close(out, F.conv2d(inp, w, padding=3))
    assert out.is_contiguous()  # as F.conv2d's, whatever orientation ours worked in
    d_inp, d_w = gate_conv.same_conv2d_backward(grad, inp, w)
    ref_inp = torch.ops.aten.convolution_backward(grad, inp, w, None, [1, 1], [3, 3], [1, 1], False,
                                                  [0, 0], 1, [True, False, False])[0]
    torch.testing.assert_close(d_inp, ref_inp)
    torch.testing.assert_close(d_w, _reference_weight_grad(grad, inp, w))


def test_float32_is_at_least_as_accurate_as_pytorch():
    inp = torch.randn(8, 2, 7, 300)
    w = torch.randn(1, 2, 7, 7)
    grad = torch.randn(8, 1, 7, 300)
    exact = F.conv2d(inp.double(), w.double(), padding=3)
    ours = (torch.ops.attnkernels.gate_conv2d(inp, w).double() - exact).abs().max()
    theirs = (F.conv2d(inp, w, padding=3).double() - exact).abs().max()
    assert ours <= theirs
    exact_w = _reference_weight_grad(grad.double(), inp.double(), w.double())
    ours_w = (torch.ops.attnkernels.gate_conv2d_weight_grad(grad, inp, 7).double() - exact_w)
    theirs_w = (_reference_weight_grad(grad, inp, w).double() - exact_w)
    assert ours_w.abs().max() <= theirs_w.abs().max()


def test_independent_of_thread_count():
    inp, w = torch.randn(4, 2, 7, 300), torch.randn(1, 2, 7, 7)
    grad = torch.randn(4, 1, 7, 300)
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append((torch.ops.attnkernels.gate_conv2d(inp, w),
                         torch.ops.attnkernels.gate_conv2d_weight_grad(grad, inp, 7)))
    finally:
        torch.set_num_threads(before)
    for a, b in outs[1:]:
        assert torch.equal(a, outs[0][0]) and torch.equal(b, outs[0][1])


_ISA_SCRIPT = """
import sys, torch, attnkernels
g = torch.Generator().manual_seed(0)
inp, w = torch.randn(3, 2, 19, 300, generator=g), torch.randn(1, 2, 7, 7, generator=g)
grad, w_t = torch.randn(3, 1, 19, 300, generator=g), torch.randn(2, 1, 7, 7, generator=g)
ops = torch.ops.attnkernels
torch.save([ops.gate_conv2d(inp, w), ops.gate_conv2d(grad, w_t),
            ops.gate_conv2d_weight_grad(grad, inp, 7)], sys.argv[1])
"""


def test_baseline_and_avx2_builds_give_the_same_bits(tmp_path):
    """The kernels' AVX2 instantiation (picked where the CPU has it) and the
    baseline one (ATTNKERNELS_CPU_BASELINE=1) sum every output alike."""
    assert_same_bits_per_isa(_ISA_SCRIPT, tmp_path)


def test_bad_arguments_are_named():
    with pytest.raises(RuntimeError, match="weight must be a contiguous"):
        torch.ops.attnkernels.gate_conv2d(torch.randn(1, 2, 5, 5), torch.randn(1, 3, 3, 3))
    with pytest.raises(RuntimeError, match="kernel_size must be odd"):
        torch.ops.attnkernels.gate_conv2d_weight_grad(torch.randn(1, 1, 5, 5),
                                                      torch.randn(1, 2, 5, 5), 4)
