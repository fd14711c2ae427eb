"""NAM's channel attention: every flavour x dtype x memory format x awkward
shape x backend, training and eval mode, forward, gradients and running
statistics against the float64 reference module; a large mean; one value per
channel; convert of upstream copies."""
import copy

import pytest
import torch
from torch import nn

import attnkernels
from attnkernels import functional as F
from attnkernels import nn as fnn
from attnkernels import reference as ref

import utils
from utils import BACKENDS, FORMATS, HAS_CPU, assert_matches_oracle
from utils import assert_same_bits_per_isa, assert_same_runs, run_module, runs_per_thread_count

# (3, 8, 5, 1): a column; (1, 5, 2, 1): two values per channel; (2, 32, 16, 16)
# and (2, 6, 23, 29) (667 positions) pass the CPU's 512-position chunk of a plane.
SHAPES = [(2, 24, 7, 9), (3, 8, 5, 1), (1, 5, 2, 1), (2, 32, 16, 16), (2, 6, 23, 29)]


def randomised(m: nn.Module) -> nn.Module:
    """Scales of both signs (a fresh BatchNorm's equal scales make every
    channel weight 1/C), shifts, and running statistics away from (0, 1)."""
    g = torch.Generator().manual_seed(7)
    for bn in (b for b in m.modules() if isinstance(b, nn.BatchNorm2d)):
        C = bn.num_features
        with torch.no_grad():
            bn.weight.copy_(torch.rand(C, generator=g) * 2 - 1)
            bn.bias.copy_(torch.randn(C, generator=g) * 0.3)
            bn.running_mean.copy_(torch.randn(C, generator=g) * 0.3)
            bn.running_var.copy_(torch.rand(C, generator=g) + 0.5)
    return m


def _momentum_none(C):
    m = randomised(fnn.Channel_Att(C))
    m.bn2.momentum = None  # a cumulative average: momentum 1 / num_batches_tracked
    return m


FLAVOURS = {
    "official": lambda C: randomised(fnn.Channel_Att(C)),
    "official_eval": lambda C: randomised(fnn.Channel_Att(C)).eval(),
    "official_momentum_none": _momentum_none,
    "yolo": lambda C: randomised(fnn.NAMAttention(C)),
}

# The shared matrices' flavours (tests/flavours.py): name -> C -> a fused module.
SHARED_FLAVOURS = {
    "official": lambda C: randomised(fnn.Channel_Att(C)),
}

# The shared tests' other entries (tests/flavours.py): the main flavour (a
# SHARED_FLAVOURS key: realistic sizes in test_tiles), shapes whose Triton
# launches cross every tile, the two-runs determinism module and its C, and
# the forward op with arguments (test_op_outputs; x is (2, 6, 3, 5), w(*shape)
# a parameter).
MAIN_FLAVOUR = "official"
# 17x19 = 323 positions past 256- and 32-position blocks, 137 channels past 4-,
# 32- and 128-channel blocks
TRITON_TILE_SHAPES = {"official": (2, 137, 17, 19)}
TWO_RUNS = (lambda: randomised(fnn.Channel_Att(40)), 40)


def forward_op_case(backend, x, w):
    if backend == "triton":
        from attnkernels.nam import triton as _  # noqa: F401  (registers the *_triton ops)
    op = getattr(torch.ops.attnkernels, "nam_forward" + ("_triton" if backend == "triton" else ""))
    return op.default, (x, w(x.shape[1]), w(x.shape[1]), None, None, 1e-5)

reference_twin = utils.reference_twin


test_matches_reference = utils.flavour_matrix_test(FLAVOURS, SHAPES)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(backend, device, fmt, training):
    # x and the shift; the scale's gradient cannot be checked by finite
    # differences: its channel weights are taken without gradient, as upstream
    # does (the matrix checks it against the reference's autograd).
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, device=device)
    x = x.to(memory_format=FORMATS[fmt]).requires_grad_()
    weight = torch.rand(3, dtype=torch.float64, device=device) * 2 - 1
    bias = torch.randn(3, dtype=torch.float64, device=device, requires_grad=True)
    running = None if training else torch.randn(3, dtype=torch.float64, device=device)
    running_var = None if training else torch.rand(3, dtype=torch.float64, device=device) + 0.5
    assert utils.gradcheck(
        lambda x, b: F.nam_channel_attention(x, weight, b, running, running_var, training,
                                             backend=backend),
        (x, bias), backend, device)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_large_mean_keeps_the_variance(backend, device, fmt):
    # mean 1e3, spread 1: sum(x^2) - n mean^2 would lose every digit of the
    # variance in float32; the statistics are exact per plane chunk, then merged.
    x = (1e3 + torch.randn(3, 4, 40, 30, dtype=torch.float64, device=device))
    x = x.to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    m = randomised(fnn.Channel_Att(4)).to(device)
    m.backend = backend
    oracle = run_module(reference_twin(m).double(), x, dy)
    eager = run_module(reference_twin(m), x.float(), dy.float())
    fused = run_module(m, x.float(), dy.float())
    for i, name in ((0, "y"), (1, "dx")):
        assert_matches_oracle(fused[i], eager[i], oracle[i], name)
    for name in oracle[2]:
        assert_matches_oracle(fused[2][name], eager[2][name], oracle[2][name], name,
                              terms=utils.parameter_terms(x.shape))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_one_value_per_channel_in_training_fails_like_upstream(backend, device):
    m = randomised(fnn.Channel_Att(3)).to(device)
    m.backend = backend
    x = torch.randn(1, 3, 1, 1, device=device)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        m(x)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        reference_twin(m)(x)
    m.eval()  # running statistics: any batch
    torch.testing.assert_close(m(x), reference_twin(m)(x))


test_zero_size = utils.zero_size_test(lambda C: randomised(fnn.Channel_Att(C)))


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(1, 24, 9, 7), (7, 40, 30, 29)])
def test_cpu_independent_of_thread_count(fmt, shape):
    m = randomised(fnn.Channel_Att(shape[1]))
    m.backend = "cpu"
    x = torch.randn(shape).to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    assert_same_runs(runs_per_thread_count(m, x, dy))


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("batch", [True, False])
def test_opcheck(fmt, batch):
    x = torch.randn(2, 6, 3, 5).to(memory_format=FORMATS[fmt]).requires_grad_()
    weight = torch.randn(6, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    running = (None, None) if batch else (torch.randn(6), torch.rand(6) + 0.5)
    args = (x, weight, bias, *running, 1e-5)
    torch.library.opcheck(torch.ops.attnkernels.nam_forward.default, args)
    with torch.no_grad():
        y, mean, invstd, var = torch.ops.attnkernels.nam_forward(*args)
    assert var.shape == ((6,) if batch else (0,))
    torch.library.opcheck(torch.ops.attnkernels.nam_backward.default,
                          (torch.randn_like(y), x.detach(), weight.detach(), bias.detach(), mean,
                           invstd, batch))


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_saves_only_per_channel_statistics():
    # backward keeps x, the BatchNorm's weight and bias and two (C,) statistics
    m = randomised(fnn.Channel_Att(6))
    x = torch.randn(2, 6, 8, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        m(x)
    assert sorted(tuple(t.shape) for t in saved) == [(2, 6, 8, 8), (6,), (6,), (6,), (6,)]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(x=torch.randn(4, 3, 3)), ValueError, "x must be a 4-D"),
    (dict(bn_weight=None), ValueError, "bn_weight is None"),
    (dict(bn_bias=torch.randn(3)), ValueError, "bn_bias must have shape"),
    (dict(running_mean=torch.zeros(4)), ValueError, "give both running_mean and running_var"),
    (dict(bn=False), ValueError, "bn must be True"),
])
def test_bad_input_names_the_argument(kwargs, error, match):
    args = dict(x=torch.randn(2, 4, 3, 3), bn_weight=torch.randn(4), bn_bias=torch.randn(4))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.nam_channel_attention(**args)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_compiled_op_checks_its_arguments():
    x, w = torch.randn(2, 4, 3, 3), torch.randn(4)
    with torch.no_grad():
        y, mean, invstd, _ = torch.ops.attnkernels.nam_forward(x, w, w, None, None, 1e-5)
    with pytest.raises(RuntimeError, match="mean and invstd"):
        torch.ops.attnkernels.nam_backward(y, x, w, w, mean[:2], invstd, True)
    with pytest.raises(RuntimeError, match="dy"):
        torch.ops.attnkernels.nam_backward(y[:1], x, w, w, mean, invstd, True)
    with pytest.raises(RuntimeError, match="weight"):
        torch.ops.attnkernels.nam_forward(x, w[:3], w, None, None, 1e-5)
    with pytest.raises(RuntimeError, match="give both"):
        torch.ops.attnkernels.nam_forward(x, w, w, w, None, 1e-5)


def test_flavour_factory_and_state_dict():
    assert type(fnn.NAMChannelAttention(8)) is fnn.Channel_Att
    assert type(fnn.NAMChannelAttention(8, flavour="yolo")) is fnn.NAMAttention
    with pytest.raises(ValueError, match="unknown NAM flavour"):
        fnn.NAMChannelAttention(8, flavour="nope")
    assert fnn.Channel_Att(8).state_dict().keys() == ref.Channel_Att(8).state_dict().keys()
    assert fnn.NAMAttention(8).state_dict().keys() == ref.NAMAttention(8).state_dict().keys()
    assert fnn.Channel_Att(8, t=4).channels == 8


class NAMCopy(nn.Module):
    """The official Channel_Att pasted into a project under another name."""

    def __init__(self, channels):
        super().__init__()
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        w = self.bn2.weight.data.abs() / self.bn2.weight.data.abs().sum()
        return torch.sigmoid(self.bn2(x) * w.view(1, -1, 1, 1)) * x


class NAMNoAbs(NAMCopy):
    """A copy that forgets the absolute value: the probe tells (negative scales)."""

    def forward(self, x):
        w = self.bn2.weight.data / self.bn2.weight.data.abs().sum()
        return torch.sigmoid(self.bn2(x) * w.view(1, -1, 1, 1)) * x


class NAMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(ref.Channel_Att(8), ref.NAMAttention(8), NAMCopy(8),
                                    NAMNoAbs(8))

    def forward(self, x):
        return self.blocks(self.stem(x))


@pytest.mark.parametrize("training", [True, False])
def test_convert_nam_flavours_same_outputs_gradients_and_statistics(training):
    net = randomised(NAMNet().double()).train(training)
    original = copy.deepcopy(net)
    bn = original.blocks[0].bn2
    fused, report = attnkernels.convert(original)
    converted = {n: new for n, _, new in report.converted}
    assert converted == {"blocks.0": "Channel_Att", "blocks.1.Channel_Att": "Channel_Att",
                         "blocks.2": "Channel_Att"}, str(report)
    left = {n: why for n, _, why in report.left_alone}
    assert set(left) == {"blocks.3"} and "output differs" in left["blocks.3"], str(report)
    assert fused.blocks[0].bn2 is bn  # adopted, not rebuilt
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    dy = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    utils.assert_converted_runs_like(net, fused, x, dy)


_ISA_SCRIPT = """
import sys, torch, attnkernels
g = torch.Generator().manual_seed(0)
out = []
for fmt in (torch.contiguous_format, torch.channels_last):
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, 40, 17, 19, generator=g).to(dtype).to(memory_format=fmt)
        w, b = torch.randn(40, generator=g), torch.randn(40, generator=g)
        y, mean, invstd, var = torch.ops.attnkernels.nam_forward(x, w, b, None, None, 1e-5)
        dy = torch.randn(x.shape, generator=g).to(dtype).to(memory_format=fmt)
        out += [y, mean, invstd, var,
                *torch.ops.attnkernels.nam_backward(dy, x, w, b, mean, invstd, True)]
torch.save(out, sys.argv[1])
"""


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_baseline_and_avx2_builds_give_the_same_bits(tmp_path):
    """The element loops' AVX2 instantiation and the baseline one round alike
    (the sigmoid's polynomial included: no FMA contraction either way)."""
    assert_same_bits_per_isa(_ISA_SCRIPT, tmp_path)
