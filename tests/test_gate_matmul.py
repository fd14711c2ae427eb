"""The gate networks' CPU matrix products (attnkernels/_core/gate_matmul.py): the
float64 product as the oracle, and bitwise the same bits at every thread count."""
import pytest
import torch

from attnkernels._core import gate_matmul
from utils import HAS_CPU

pytestmark = pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")

# (a shape, b shape): plain, one block and several (256 rows x 64 columns
# each) with ragged last ones, K = 1, K in chunks (256, or K / 64 when
# longer), a shared 2-D operand on either side (Coordinate Attention's strip
# convs: a batch of 7-column strips, rows in several blocks, K in chunks),
# both batched.
SHAPES = [((12, 7), (7, 24)), ((9, 10), (10, 72)), ((144, 9), (9, 200)), ((3, 1), (1, 5)),
          ((256, 300), (300, 130)), ((3, 20000), (20000, 5)), ((600, 20), (20, 70)),
          ((8, 40), (5, 40, 70)), ((300, 64), (8, 64, 7)), ((64, 600), (8, 600, 7)),
          ((5, 8, 40), (40, 70)), ((5, 90, 600), (600, 7)), ((5, 8, 40), (5, 40, 129)),
          ((3, 300, 600), (3, 600, 70))]


def assert_near_the_float64_product(out, a, b):
    exact = torch.matmul(a.double(), b.double())
    assert out.dtype == a.dtype and out.shape == exact.shape and out.is_contiguous()
    # K terms in chunks of 256 (K / 64 when longer), the chunks' partial products
    # summed in float64: about 256 roundings of the dtype on the magnitudes (this
    # worst case is far from random signs even for the 313-term chunks of K =
    # 20000), then one more
    k = a.shape[-1]
    magnitude = torch.matmul(a.double().abs(), b.double().abs())
    tol = torch.finfo(a.dtype).eps * (min(k, 256) * magnitude + exact.abs())
    assert ((out.double() - exact).abs() <= tol).all()


@pytest.mark.parametrize("a_shape,b_shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_the_float64_product(a_shape, b_shape, dtype):
    a, b = torch.randn(a_shape, dtype=dtype), torch.randn(b_shape, dtype=dtype)
    assert_near_the_float64_product(torch.ops.attnkernels.gate_matmul(a, b), a, b)


def test_strided_operands():
    """Transposed and sliced views are read in place, as F.linear's weight.t() is."""
    a = torch.randn(40, 30)[:, :20]
    w = torch.randn(70, 20)
    torch.testing.assert_close(gate_matmul.matmul(a, w.t()), a @ w.t())
    torch.testing.assert_close(gate_matmul.linear(a, w, torch.ones(70)),
                               torch.nn.functional.linear(a, w, torch.ones(70)))
    t = torch.randn(6, 1, 9, 11).transpose(2, 3)
    torch.testing.assert_close(gate_matmul.sum_all(t), t.sum())
    # batched operands that are views: the folded forms copy what they need
    strips = torch.randn(8, 7, 600).transpose(1, 2)
    w = torch.randn(600, 300).t()
    assert_near_the_float64_product(gate_matmul.matmul(w, strips), w, strips)
    rows = torch.randn(5, 600, 90).transpose(1, 2)
    b = torch.randn(7, 600).t()
    assert_near_the_float64_product(gate_matmul.matmul(rows, b), rows, b)
    both = torch.randn(3, 70, 600).transpose(1, 2)
    assert_near_the_float64_product(gate_matmul.matmul(rows[:3], both), rows[:3], both)
    # size-1 dims with strides BLAS would refuse as leading dimensions (a
    # Coordinate Attention bias gradient at C = 4096 made a (24, 1) with strides
    # (1, 12), and read garbage)
    column = torch.randn(24).as_strided((24, 1), (1, 12))
    for a, b in [(torch.randn(8, 24), column), (column.t(), torch.randn(24, 5)),
                 (torch.randn(1, 24).as_strided((1, 24), (3, 1)), torch.randn(24, 1)),
                 (torch.randn(24).as_strided((8, 1), (1, 5)), torch.randn(1, 30))]:
        assert_near_the_float64_product(gate_matmul.matmul(a, b), a, b)
    # a shared operand BLAS cannot read in place (both strides above 1), with
    # a batch too wide to fold: copied once, not once per sample
    every_other = torch.randn(50, 80)[::2, ::2]
    wide = torch.randn(4, 40, 48)
    assert_near_the_float64_product(gate_matmul.matmul(every_other, wide), every_other, wide)


def test_sum_all():
    t = torch.randn(128, 1, 2048, 7)  # a conv-bias gradient's size on ResNet's last stage
    torch.testing.assert_close(gate_matmul.sum_all(t), t.double().sum().float())
    for n in (0, 1, 255, 256, 257, 1000):
        u = torch.randn(n)
        torch.testing.assert_close(gate_matmul.sum_all(u), u.double().sum().float())


def test_empty():
    ops = torch.ops.attnkernels
    assert ops.gate_matmul(torch.randn(0, 3), torch.randn(3, 4)).shape == (0, 4)
    assert torch.equal(ops.gate_matmul(torch.randn(2, 0), torch.randn(0, 4)), torch.zeros(2, 4))


@pytest.mark.parametrize("a_shape,b_shape", [((12, 7), (7, 24)), ((9, 10), (10, 72)),
                                             ((256, 2048), (2048, 130)),
                                             ((16, 8, 256), (256, 112)),
                                             ((64, 2048), (8, 2048, 7))])
def test_independent_of_thread_count(a_shape, b_shape):
    """MKL's own a @ b changes with the thread count on some CPUs at these shapes."""
    a, b = torch.randn(a_shape), torch.randn(b_shape)
    big = torch.randn(128, 1, 2048, 7)  # a sum of 1.8M terms: t.sum() splits them by thread
    before = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3, 8):
            torch.set_num_threads(n)
            runs.append((torch.ops.attnkernels.gate_matmul(a, b), gate_matmul.sum_all(big)))
    finally:
        torch.set_num_threads(before)
    for out, total in runs[1:]:
        assert torch.equal(out, runs[0][0]) and torch.equal(total, runs[0][1])


def test_opcheck():
    ops = torch.ops.attnkernels
    torch.library.opcheck(ops.gate_matmul.default, (torch.randn(5, 7), torch.randn(7, 3)))
    torch.library.opcheck(ops.gate_matmul.default, (torch.randn(4, 5, 7), torch.randn(7, 3)))


def test_bad_arguments_are_named():
    ops = torch.ops.attnkernels
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        ops.gate_matmul(torch.randn(3, 4), torch.randn(5, 6))
    with pytest.raises(RuntimeError, match="float32 or both float64"):
        ops.gate_matmul(torch.randn(3, 4), torch.randn(4, 6, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="batch sizes differ"):
        ops.gate_matmul(torch.randn(2, 3, 4), torch.randn(3, 4, 6))
    with pytest.raises(RuntimeError, match="2-D or 3-D"):
        ops.gate_matmul(torch.randn(4), torch.randn(4, 6))
