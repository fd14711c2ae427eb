"""EMA (Efficient Multi-scale Attention): every flavour x dtype x memory
format x awkward shape x backend against the float64 reference module,
forward and every gradient; the fused function alone in half precision;
gradcheck, opcheck, saved tensors; convert of upstream copies."""
import copy
import math

import pytest
import torch
from torch import nn

import attnkernels
from attnkernels import functional as F
from attnkernels import nn as fnn
from attnkernels import reference as ref

import utils
from utils import BACKENDS, FORMATS, HAS_CPU, run_module

# (3, 8, 5, 1): a column; (2, 6, 2, 1): two positions; (2, 32, 16, 16) and
# (2, 12, 23, 29) (667 positions) larger planes; (1, 24, 7, 9) one sample.
SHAPES = [(2, 24, 7, 9), (3, 8, 5, 1), (2, 6, 2, 1), (2, 32, 16, 16), (2, 12, 23, 29),
          (1, 24, 7, 9)]


def drawn(m: nn.Module) -> nn.Module:
    """The GroupNorm's affine drawn at random (a fresh one's zero bias makes
    the softmax over it uniform and its unit scale hides a swapped factor)."""
    g = torch.Generator().manual_seed(11)
    if m.gn.affine:
        with torch.no_grad():
            m.gn.weight.copy_(torch.rand(m.gn.weight.shape, generator=g) + 0.5)
            m.gn.bias.copy_(torch.randn(m.gn.bias.shape, generator=g))
    return m


def official(C, most=4):
    """The official EMA with the largest factor up to ``most`` dividing C."""
    return drawn(fnn.EMA(C, factor=math.gcd(C, most)))


def _no_affine(C):
    m = fnn.EMA(C, factor=math.gcd(C, 2))
    m.gn = nn.GroupNorm(m.gn.num_groups, m.gn.num_channels, affine=False)
    return m


FLAVOURS = {
    "official": official,
    "seed": lambda C: drawn(fnn.EMASeed(C, factor=math.gcd(C, 2))),
    "one_group": lambda C: drawn(fnn.EMA(C, factor=1)),
    "no_affine": _no_affine,
}

# The shared matrices' flavours (tests/flavours.py): name -> C -> a fused module.
SHARED_FLAVOURS = {"official": official}

# The shared tests' other entries (tests/flavours.py): see tests/test_nam.py.
MAIN_FLAVOUR = "official"
# 4 groups of 19 channels past 2- and 4-channel blocks, 37x35 = 1295 positions
# past 128-position blocks, 37 rows past 8-row and 35 columns past 16-column tiles
TRITON_TILE_SHAPES = {"official": (1, 76, 37, 35)}
TWO_RUNS = (lambda: official(40), 40)
# The 3x3 convolution is the library's: its weight gradient's bits depend on
# the thread count (tests/flavours.py).
THREAD_DEPENDENT_LAYERS = "the 3x3 convolution branch is a library convolution"


def forward_op_case(backend, x, w):
    if backend == "triton":
        from attnkernels.ema import triton as _  # noqa: F401  (registers the *_triton ops)
    B, C, H, W = x.shape
    groups = math.gcd(C, 2)
    g = C // groups
    x2 = torch.randn(B * groups, g, H, W, dtype=x.dtype, device=x.device)
    op = getattr(torch.ops.attnkernels, "ema_forward" + ("_triton" if backend == "triton" else ""))
    return op.default, (x, x2, w(g, g, 1, 1), w(g), w(g), w(g),
                                                       groups, 1e-5)


reference_twin = utils.reference_twin



def _matrix_cases():
    """utils.matrix_cases, the Triton interpreter (some 100x slower) running
    the other flavours (other parameters, the same kernels) at one case each."""
    for case in utils.matrix_cases(FLAVOURS, utils.MODULE_DTYPES, FORMATS, SHAPES):
        backend, device, flavour, dtype, fmt, shape = case.values
        if (backend, device) == ("triton", "cpu") and flavour != MAIN_FLAVOUR and (
                dtype != torch.float32 or fmt != "nchw" or shape != SHAPES[0]):
            continue
        yield case


@pytest.mark.parametrize("backend,device,flavour,dtype,fmt,shape", list(_matrix_cases()))
def test_matches_reference(backend, device, flavour, dtype, fmt, shape):
    fused = FLAVOURS[flavour](shape[1]).to(device)
    utils.assert_flavour_matches_reference(fused, backend, dtype, fmt, shape, device)
# An empty plane: the 3x3 convolution (upstream's and the drop-in's, the
# library's) refuses it (test_an_empty_plane_is_refused_like_upstream).
test_zero_size = utils.zero_size_test(official, shapes=((0, 8, 4, 4),))


def test_an_empty_plane_is_refused_like_upstream():
    m = official(8)
    x = torch.randn(2, 8, 0, 3)
    for module in (m, reference_twin(m)):
        with pytest.raises(RuntimeError, match="reshape tensor of 0 elements|Kernel size can't"):
            module(x)


def test_one_value_per_group_fails_like_upstream():
    m = fnn.EMA(4, factor=1)  # the GroupNorm sees B * factor * H * W = 1 value per channel
    x = torch.randn(1, 4, 1, 1)
    for module in (m, reference_twin(m)):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            module(x)


def _function_args(shape, groups, dtype, fmt, device, seed):
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    c = C // groups

    def draw(*s, scale=1.0):
        return (torch.randn(s, generator=g, dtype=torch.float64) * scale).to(dtype).double()

    x = draw(*shape).to(device=device, memory_format=FORMATS[fmt])
    x2 = draw(B * groups, c, H, W).to(device=device, memory_format=FORMATS[fmt])
    params = [draw(c, c, 1, 1, scale=0.7), draw(c), draw(c, scale=0.5).add(1), draw(c)]
    return x, x2, [p.to(device) for p in params]


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", utils.MODULE_DTYPES)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("shape,groups", [((2, 24, 7, 9), 4), ((3, 8, 5, 1), 2),
                                          ((2, 40, 23, 29), 5), ((2, 5, 1, 1), 1)])
def test_functional_matches_reference(backend, device, dtype, fmt, shape, groups):
    """The fused function alone (x2 given): y and the gradients of x, x2 and
    the four parameters against float64, eager in dtype."""
    if backend == "triton" and device == "cpu" and (dtype == torch.bfloat16 or groups == 5):
        pytest.skip("the Triton interpreter: no bfloat16 arithmetic; 40 channels at 23x29 take "
                    "10 s (the tile test crosses the Triton tiles)")
    x, x2, params = _function_args(shape, groups, dtype, fmt, device, sum(shape) + groups)
    dy = torch.randn(shape, generator=torch.Generator().manual_seed(1),
                     dtype=torch.float64).to(dtype).double().to(device)

    def run(fn, dt):
        args = [t.to(dt).requires_grad_() for t in (x, x2, *params)]
        y = fn(*args[:2], *args[2:], groups)
        return [y, *torch.autograd.grad(y, args, dy.to(dt))]

    oracle = run(ref.efficient_multiscale_attention, torch.float64)
    eager = run(ref.efficient_multiscale_attention, dtype)
    fused = run(lambda *a: F.efficient_multiscale_attention(*a, backend=backend), dtype)
    assert fused[0].is_contiguous(memory_format=FORMATS[fmt])
    names = ["y", "dx", "dx2", "dw1", "db1", "dgn_w", "dgn_b"]
    for name, f, e, o in zip(names, fused, eager, oracle):
        terms = utils.parameter_terms(shape) if name.startswith(("dw", "db", "dgn")) else 0.0
        utils.assert_matches_oracle(f, e, o, name, terms=terms)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("shape,groups", [((2, 4, 3, 5), 2), ((1, 3, 4, 2), 1)])
def test_gradcheck(backend, device, fmt, shape, groups):
    x, x2, params = _function_args(shape, groups, torch.float64, fmt, device, 3)
    args = [t.requires_grad_() for t in (x, x2, *params)]
    assert utils.gradcheck(
        lambda *a: F.efficient_multiscale_attention(*a, groups=groups, backend=backend),
        tuple(args), backend, device)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_large_mean_keeps_the_group_norm_variance(backend, device, fmt):
    # mean 1e3, spread 1: sum(z^2) - n mean^2 would lose every digit in float32
    m = official(8).to(device)
    m.backend = backend
    x = (1e3 + torch.randn(2, 8, 20, 30, dtype=torch.float64, device=device))
    x = x.to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    oracle = run_module(reference_twin(m).double(), x, dy)
    eager = run_module(reference_twin(m), x.float(), dy.float())
    fused = run_module(m, x.float(), dy.float())
    for i, name in ((0, "y"), (1, "dx")):
        utils.assert_matches_oracle(fused[i], eager[i], oracle[i], name)
    for name in oracle[2]:
        utils.assert_matches_oracle(fused[2][name], eager[2][name], oracle[2][name], name,
                                    terms=utils.parameter_terms(x.shape))


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(1, 24, 9, 7), (5, 40, 30, 29)])
def test_cpu_independent_of_thread_count(fmt, shape):
    """The fused ops' every output, bitwise, at 1, 2 and 3 threads (the
    module's 3x3 convolution is the library's: no such promise)."""
    groups = math.gcd(shape[1], 4)
    x, x2, params = _function_args(shape, groups, torch.float32, fmt, "cpu", 9)
    x, x2, params = x.float(), x2.float(), [p.float() for p in params]
    dy = torch.randn_like(x)
    ops = torch.ops.attnkernels
    before, runs = torch.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = ops.ema_forward(x, x2, *params, groups, 1e-5)
            back = ops.ema_backward(dy, x, x2, params[0], *params[2:], *out[1:], groups)
            runs.append([*out, *back])
    finally:
        torch.set_num_threads(before)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_opcheck(fmt):
    x, x2, (w1, b1, gw, gb) = _function_args((2, 6, 3, 5), 2, torch.float32, fmt, "cpu", 5)
    args = (x.float().requires_grad_(), x2.float().requires_grad_(), w1.float(), b1.float(),
            gw.float(), gb.float(), 2, 1e-5)
    torch.library.opcheck(torch.ops.attnkernels.ema_forward.default, args)
    with torch.no_grad():
        y, strips, gates, stats, s = torch.ops.attnkernels.ema_forward(*args)
    assert strips.shape == gates.shape == (4, 3, 8) and stats.shape == (4, 4, 3)
    assert s.shape == (4, 3, 5)
    torch.library.opcheck(torch.ops.attnkernels.ema_backward.default,
                          (torch.randn_like(y), x.float(), x2.float(), w1.float(), gw.float(),
                           gb.float(), strips, gates, stats, s, 2))


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_saves_x_x2_and_small_tensors_only():
    """Besides the 3x3 conv's own (its input, a view of x, and its weight),
    backward keeps x, x2 and tensors of at most a (B * G, H, W) map's size."""
    m = official(8)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        m(x)
    big = {t.untyped_storage().data_ptr() for t in saved if t.numel() >= x.numel()}
    assert len(big) == 2, [tuple(t.shape) for t in saved]  # x (and its view) and x2
    assert all(t.numel() <= 2 * 4 * 6 * 6 for t in saved if t.numel() < x.numel())


def test_bad_input_names_the_argument():
    x, x2 = torch.randn(2, 4, 3, 3), torch.randn(4, 2, 3, 3)
    w1, v = torch.randn(2, 2, 1, 1), torch.randn(2)
    with pytest.raises(ValueError, match="groups"):
        F.efficient_multiscale_attention(x, x2, w1, v, v, v, groups=3)
    with pytest.raises(ValueError, match="x2 must have shape"):
        F.efficient_multiscale_attention(x, x2[:2], w1, v, v, v, groups=2)
    with pytest.raises(ValueError, match="conv1x1_weight must have shape"):
        F.efficient_multiscale_attention(x, x2, w1[:1], v, v, v, groups=2)
    with pytest.raises(ValueError, match="gn_bias must have shape"):
        F.efficient_multiscale_attention(x, x2, w1, v, v, torch.randn(3), groups=2)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_compiled_ops_check_their_arguments():
    x, x2, (w1, b1, gw, gb) = _function_args((2, 4, 3, 5), 2, torch.float32, "nchw", "cpu", 2)
    x, x2 = x.float(), x2.float()
    w1, b1, gw, gb = w1.float(), b1.float(), gw.float(), gb.float()
    ops = torch.ops.attnkernels
    with pytest.raises(RuntimeError, match="groups"):
        ops.ema_forward(x, x2, w1, b1, gw, gb, 3, 1e-5)
    with pytest.raises(RuntimeError, match="x2 must be"):
        ops.ema_forward(x, x2[:2], w1, b1, gw, gb, 2, 1e-5)
    with pytest.raises(RuntimeError, match="w1 must be"):
        ops.ema_forward(x, x2, w1[:1], b1, gw, gb, 2, 1e-5)
    y, strips, gates, stats, s = ops.ema_forward(x, x2, w1, b1, gw, gb, 2, 1e-5)
    with pytest.raises(RuntimeError, match="stats must be"):
        ops.ema_backward(y, x, x2, w1, gw, gb, strips, gates, stats[:1], s, 2)
    with pytest.raises(RuntimeError, match="dy"):
        ops.ema_backward(y[:1], x, x2, w1, gw, gb, strips, gates, stats, s, 2)


def test_flavour_factory_and_state_dict():
    assert type(fnn.EfficientMultiScaleAttention(64)) is fnn.EMA
    assert type(fnn.EfficientMultiScaleAttention(64, flavour="seed")) is fnn.EMASeed
    with pytest.raises(ValueError, match="unknown EMA flavour"):
        fnn.EfficientMultiScaleAttention(64, flavour="nope")
    assert fnn.EMA(64).state_dict().keys() == ref.EMA(64).state_dict().keys()
    assert fnn.EMASeed(64, 8).groups == 8 and fnn.EMA(64, 8).groups == 32  # EMA's 2nd is c2


def test_a_norm_that_is_not_per_channel_runs_the_reference():
    m = official(8)
    m.gn = nn.GroupNorm(1, 2)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(m(x), reference_twin(m)(x))
    m.backend = "cpu"
    with pytest.raises(RuntimeError, match="not a GroupNorm with one group per channel"):
        m(x)


class EMACopy(nn.Module):
    """The official EMA pasted into a project under another name."""

    def __init__(self, channels, factor=4):
        super().__init__()
        self.groups = factor
        g = channels // factor
        self.softmax = nn.Softmax(-1)
        self.agp = nn.AdaptiveAvgPool2d((1, 1))
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        self.gn = nn.GroupNorm(g, g)
        self.conv1x1 = nn.Conv2d(g, g, kernel_size=1)
        self.conv3x3 = nn.Conv2d(g, g, kernel_size=3, padding=1)

    forward = ref.EMA.forward


class EMANoNorm(EMACopy):
    """A copy that skips the GroupNorm: the probe tells."""

    def forward(self, x):
        b, c, h, w = x.size()
        gx = x.reshape(b * self.groups, -1, h, w)
        return (gx * self.conv3x3(gx).sigmoid()).reshape(b, c, h, w)


class EMAAttention(nn.Module):
    """A copy with its own child names: no matcher knows it."""

    def __init__(self, channels):
        super().__init__()
        self.Conv1x1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x * self.Conv1x1(x).sigmoid()


class EMANet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(ref.EMA(16, factor=4), ref.EMASeed(16, 2), EMACopy(16),
                                    EMANoNorm(16), EMAAttention(16))

    def forward(self, x):
        return self.blocks(self.stem(x))


def test_convert_ema_flavours_same_outputs_and_gradients():
    net = EMANet().double()
    for m in net.modules():
        if isinstance(m, nn.GroupNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    original = copy.deepcopy(net)
    gn = original.blocks[0].gn
    fused, report = attnkernels.convert(original)
    converted = {n: new for n, _, new in report.converted}
    assert converted == {"blocks.0": "EMA", "blocks.1": "EMA", "blocks.2": "EMA"}, str(report)
    left = {n: why for n, _, why in report.left_alone}
    assert set(left) == {"blocks.3", "blocks.4"}, str(report)
    assert "output differs" in left["blocks.3"], str(report)
    assert "looks like EMA" in left["blocks.4"], str(report)
    assert fused.blocks[0].gn is gn and fused.blocks[1].groups == 2  # adopted, not rebuilt
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    dy = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    utils.assert_converted_runs_like(net, fused, x, dy)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_torch_export_keeps_the_fused_op():
    m = official(8).eval()
    x = torch.randn(2, 8, 6, 7)
    ep = torch.export.export(m, (x,))
    assert "attnkernels.ema_forward" in str(ep.graph)
    torch.testing.assert_close(ep.module()(x), m(x))


_ISA_SCRIPT = """
import sys, torch, attnkernels
g = torch.Generator().manual_seed(0)
out = []
for fmt in (torch.contiguous_format, torch.channels_last):
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 24, 17, 19, generator=g).to(dtype).to(memory_format=fmt)
        x2 = torch.randn(8, 6, 17, 19, generator=g).to(dtype).to(memory_format=fmt)
        w1, v = torch.randn(6, 6, 1, 1, generator=g), torch.randn(6, generator=g)
        res = torch.ops.attnkernels.ema_forward(x, x2, w1, v, v + 2, v, 4, 1e-5)
        dy = torch.randn(x.shape, generator=g).to(dtype).to(memory_format=fmt)
        out += [*res, *torch.ops.attnkernels.ema_backward(dy, x, x2, w1, v + 2, v, *res[1:], 4)]
torch.save(out, sys.argv[1])
"""


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_baseline_and_avx2_builds_give_the_same_bits(tmp_path):
    """The group loops' AVX2 instantiation and the baseline one round alike
    (the lanes' order and the sigmoid's polynomial: no FMA contraction either way)."""
    utils.assert_same_bits_per_isa(_ISA_SCRIPT, tmp_path)
