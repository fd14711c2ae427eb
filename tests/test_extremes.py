"""Extremes, every family on the CPU backend against its upstream module: large
fp16 magnitudes over many pixels, Inf and NaN through the pools and gates, a
channel that is -inf everywhere, C = 1 and C = 4096, a reduced width of 1."""
import pytest
import torch


from flavours import FLAVOURS, LIBRARY_LAYERS
from utils import HAS_CPU, batch_norm_over_few_values, assert_module_matches_reference, family_of

pytestmark = pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")


def _pair(flavour, channels):
    torch.manual_seed(0)
    fused = FLAVOURS[flavour](channels).eval()
    fused.backend = "cpu"
    return fused, fused.reference_module()


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_fp16_large_magnitude_over_many_pixels_stays_finite(flavour):
    """|x| = 256 over 128x128 pixels: a pool that summed in fp16 would overflow."""
    fused, ref = _pair(flavour, 8)
    fused, ref = fused.half(), ref.float()
    x = (torch.randint(0, 2, (2, 8, 128, 128)) * 2 - 1).half() * 256
    y = fused(x)
    expect = ref(x.float())
    assert torch.isfinite(expect).all()
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), expect, rtol=2e-2, atol=2e-2 * 256)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_inf_and_nan_land_where_upstream_puts_them(flavour, value):
    fused, ref = _pair(flavour, 6)
    fused, ref = fused.double(), ref.double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    x[1, 2, 3, 4] = value
    y, expect = fused(x), ref(x)
    assert torch.equal(y.isnan(), expect.isnan())
    assert torch.equal(y.isinf(), expect.isinf())
    finite = torch.isfinite(expect)
    torch.testing.assert_close(y[finite], expect[finite])


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_a_channel_of_minus_inf(flavour):
    """A whole window of -inf: its max and mean are -inf, as upstream's."""
    fused, ref = _pair(flavour, 6)
    fused, ref = fused.double(), ref.double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    x[0, 3] = float("-inf")
    y, expect = fused(x), ref(x)
    assert torch.equal(y.isnan(), expect.isnan())
    finite = torch.isfinite(expect)
    torch.testing.assert_close(y[finite], expect[finite])


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("shape", [(2, 1, 5, 7), (2, 4096, 2, 3)])
def test_one_and_4096_channels(flavour, shape):
    fused, _ = _pair(flavour, shape[1])
    # training mode, unless a BatchNorm would normalise a handful of values per
    # channel (timm SelectiveKernel's gate BatchNorm: N = 2 here), where no
    # budget tells a bug from rounding (as check_flavour_case): then eval
    fused.train(not batch_norm_over_few_values(fused, shape, True, family_of(flavour)))
    # library BatchNorms inside the module normalise 2 to 12 values per channel here
    why = LIBRARY_LAYERS.get(family_of(flavour))
    assert_module_matches_reference(fused, lambda f: f.reference_module(), torch.float32,
                                    torch.contiguous_format, shape, "cpu", why_nudged=why)


def test_reduced_width_one():
    from attnkernels import nn as fnn

    for fused in (fnn.SEModule(16, rd_channels=1), fnn.CbamModule(16, rd_channels=1),
                  fnn.CoordAttn(16, rd_channels=1)):
        fused.backend = "cpu"
        assert_module_matches_reference(fused, lambda f: f.reference_module(), torch.float32,
                                        torch.contiguous_format, (2, 16, 5, 7), "cpu")


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("train", [False, True])
def test_zero_batch_like_upstream(flavour, train):
    """An empty batch: empty output and dx, zero parameter gradients, and in
    training mode BatchNorm's running statistics left alone (num_batches_tracked
    still counts), all as upstream. native_batch_norm refuses an empty input,
    and its backward divides by zero on one."""
    fused, _ = _pair(flavour, 6)
    fused.train(train)
    ref = fused.reference_module()
    outs = []
    for m in (ref, fused):
        x = torch.randn(0, 6, 5, 7, requires_grad=True)
        try:
            y = m(x)
        except RuntimeError as e:  # a .view(N, -1) upstream: nothing to be like
            assert m is ref
            pytest.skip(f"upstream refuses an empty batch: {e}")
        y.sum().backward()
        outs.append((y, x.grad, {n: p.grad for n, p in m.named_parameters()},
                     dict(m.named_buffers())))
    (y_r, dx_r, grads_r, buffers_r), (y, dx, grads, buffers) = outs
    assert y.shape == y_r.shape and dx.shape == dx_r.shape
    for n, g in grads_r.items():
        if g is None:
            assert grads[n] is None or not grads[n].any(), n
        else:
            assert torch.equal(grads[n], g), n
    for n, b in buffers_r.items():
        assert torch.equal(buffers[n], b), n
