"""SimAM: every flavour x dtype x memory format x awkward shape x backend,
forward and gradient against the float64 reference module; the 1x1 map, the
constant plane and a large mean; convert of upstream copies."""
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

# (3, 8, 5, 1): a column; (1, 5, 2, 1): H*W - 1 = 1; (2, 32, 16, 16) and
# (2, 6, 23, 29) (667 positions) pass the CPU's 512-position chunk of a plane.
SHAPES = [(2, 24, 7, 9), (3, 8, 5, 1), (1, 5, 2, 1), (2, 32, 16, 16), (2, 6, 23, 29)]

FLAVOURS = {
    "official": lambda C: fnn.SimAMModule(C),
    "official_lambda_0.1": lambda C: fnn.SimAMModule(C, e_lambda=0.1),
    "yolo": lambda C: fnn.SimAM(1e-4),
}

# The shared matrices' flavours (tests/flavours.py): name -> C -> a fused module.
SHARED_FLAVOURS = {
    "official": lambda C: fnn.SimAMModule(C),
}

# The shared tests' other entries (tests/flavours.py): the main flavour (a
# SHARED_FLAVOURS key: realistic sizes in test_tiles), shapes whose Triton
# launches cross every tile, the two-runs determinism module and its C, and
# the forward op with arguments (test_op_outputs; x is (2, 6, 3, 5), w(*shape)
# a parameter).
MAIN_FLAVOUR = "official"
# 17x19 = 323 positions past 256- and 32-position blocks, 37 channels past 4-
# and 32-channel blocks
TRITON_TILE_SHAPES = {"official": (1, 37, 17, 19)}
TWO_RUNS = (lambda: fnn.SimAMModule(), 40)


def forward_op_case(backend, x, w):
    if backend == "triton":
        from attnkernels.simam import triton as _  # noqa: F401  (registers the *_triton ops)
    op = getattr(torch.ops.attnkernels,
                 "simam_forward" + ("_triton" if backend == "triton" else ""))
    return op.default, (x, 1e-4)

reference_twin = utils.reference_twin


test_matches_reference = utils.flavour_matrix_test(FLAVOURS, SHAPES)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("e_lambda", [1e-4, 0.5])
def test_gradcheck(backend, device, fmt, e_lambda):
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, device=device)
    x = x.to(memory_format=FORMATS[fmt]).requires_grad_()
    assert utils.gradcheck(lambda x: F.simam_attention(x, e_lambda, backend=backend), (x,),
                           backend, device)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_large_mean_keeps_the_variance(backend, device, fmt):
    # mean 1e3, spread 1: sum(x^2) - n mean^2 would lose every digit of the
    # variance in float32; the statistics are exact per chunk, then merged.
    x = (1e3 + torch.randn(2, 4, 40, 30, dtype=torch.float64, device=device))
    x = x.to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    m = fnn.SimAMModule()
    m.backend = backend
    oracle = run_module(reference_twin(m), x, dy)
    eager = run_module(reference_twin(m), x.float(), dy.float())
    fused = run_module(m, x.float(), dy.float())
    assert_matches_oracle(fused[0], eager[0], oracle[0], "y")
    assert_matches_oracle(fused[1], eager[1], oracle[1], "dx")


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_constant_plane(backend, device):
    # variance 0: the gate is sigmoid(0.5) everywhere, dx = dy * sigmoid(0.5)
    # plus the terms through the mean, which cancel.
    x = torch.full((2, 3, 4, 5), 2.5, dtype=torch.float64, device=device, requires_grad=True)
    y = F.simam_attention(x, backend=backend)
    dy = torch.randn_like(y)
    y.backward(dy)
    xr = x.detach().clone().requires_grad_()
    ref.simam_attention(xr).backward(dy)
    torch.testing.assert_close(y, x.detach() * torch.sigmoid(torch.tensor(0.5, dtype=x.dtype)))
    torch.testing.assert_close(x.grad, xr.grad)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_one_by_one_map_is_nan_like_upstream(backend, device):
    # H*W - 1 = 0: upstream divides 0 by 0; so do we, forward and backward.
    x = torch.randn(2, 3, 1, 1, device=device, requires_grad=True)
    y = F.simam_attention(x, backend=backend)
    y.sum().backward()
    x_r = x.detach().clone().requires_grad_()
    y_r = ref.SimAMModule()(x_r)
    y_r.sum().backward()
    assert y_r.isnan().all() and y.isnan().all()
    assert x_r.grad.isnan().all() and x.grad.isnan().all()


test_zero_size = utils.zero_size_test(fnn.SimAMModule)


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(1, 24, 9, 7), (7, 24, 30, 29)])
def test_cpu_independent_of_thread_count(fmt, shape):
    m = fnn.SimAMModule()
    m.backend = "cpu"
    x = torch.randn(shape).to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    assert_same_runs(runs_per_thread_count(m, x, dy))


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_opcheck(fmt):
    x = torch.randn(2, 6, 3, 5).to(memory_format=FORMATS[fmt]).requires_grad_()
    torch.library.opcheck(torch.ops.attnkernels.simam_forward.default, (x, 1e-4))
    with torch.no_grad():
        y, mean, denom = torch.ops.attnkernels.simam_forward(x, 1e-4)
    torch.library.opcheck(torch.ops.attnkernels.simam_backward.default,
                          (torch.randn_like(y), x.detach(), mean, denom))


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_saves_only_per_plane_statistics():
    # backward keeps x and two (N, C) statistics: no full-size intermediate
    x = torch.randn(2, 6, 8, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        F.simam_attention(x, backend="cpu")
    assert sorted(tuple(t.shape) for t in saved) == [(2, 6), (2, 6), (2, 6, 8, 8)]


@pytest.mark.parametrize("args,error,match", [
    ((torch.randn(4, 3, 3),), ValueError, "x must be a 4-D"),
    ((torch.randn(2, 4, 3, 3).long(),), TypeError, "x must be a floating-point"),
    ((torch.randn(2, 4, 3, 3), "0.1"), TypeError, "e_lambda must be a float"),
    ((torch.randn(2, 4, 3, 3), True), TypeError, "e_lambda must be a float"),
])
def test_bad_input_names_the_argument(args, error, match):
    with pytest.raises(error, match=match):
        F.simam_attention(*args)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_compiled_op_checks_its_arguments():
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        y, mean, denom = torch.ops.attnkernels.simam_forward(x, 1e-4)
    with pytest.raises(RuntimeError, match="mean"):
        torch.ops.attnkernels.simam_backward(y, x, mean[:, :2], denom)
    with pytest.raises(RuntimeError, match="dy"):
        torch.ops.attnkernels.simam_backward(y[:1], x, mean, denom)


def test_flavour_factory_state_dict_and_repr():
    assert type(fnn.SimAMAttention()) is fnn.SimAMModule
    m = fnn.SimAMAttention(e_lambda=0.01, flavour="yolo")
    assert type(m) is fnn.SimAM and m.e_lambda == 0.01
    with pytest.raises(ValueError, match="unknown SimAM flavour"):
        fnn.SimAMAttention(flavour="nope")
    assert fnn.SimAMModule(64).state_dict() == {} and fnn.SimAM().state_dict() == {}
    assert repr(fnn.SimAMModule(e_lambda=0.01)) == "SimAMModule(lambda=0.010000)"
    assert fnn.SimAMModule.get_module_name() == "simam"


class SimAMCopy(nn.Module):
    """The official simam_module pasted into a project under another name."""

    def __init__(self, e_lambda=1e-4):
        super().__init__()
        self.activaton = nn.Sigmoid()
        self.e_lambda = e_lambda

    def forward(self, x):
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        return x * self.activaton(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n
                                            + self.e_lambda)) + 0.5)


class SimAMTorchSigmoid(nn.Module):
    """A copy that calls torch.sigmoid (no Sigmoid child)."""

    def __init__(self):
        super().__init__()
        self.e_lambda = 1e-3

    def forward(self, x):
        return ref.simam_attention(x, self.e_lambda)


class SimAMBiased(SimAMCopy):
    """A copy whose formula divides by H*W (not H*W - 1): the probe tells."""

    def forward(self, x):
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        return x * self.activaton(d / (4 * (d.mean(dim=[2, 3], keepdim=True)
                                            + self.e_lambda)) + 0.5)


class SimAMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(ref.SimAMModule(8), ref.SimAM(0.1), SimAMCopy(),
                                    SimAMTorchSigmoid(), SimAMBiased())

    def forward(self, x):
        return self.blocks(self.stem(x))


def test_convert_simam_flavours_same_outputs_and_gradients():
    net = SimAMNet().double()
    original = copy.deepcopy(net)
    sigmoid = original.blocks[2].activaton
    fused, report = attnkernels.convert(original)
    converted = {n: new for n, _, new in report.converted}
    assert converted == {"blocks.0": "SimAMModule", "blocks.1": "SimAM",
                         "blocks.2": "SimAMModule", "blocks.3": "SimAMModule"}, str(report)
    left = {n: why for n, _, why in report.left_alone}
    assert set(left) == {"blocks.4"} and "output differs" in left["blocks.4"], str(report)
    assert fused.blocks[1].e_lambda == 0.1 and fused.blocks[3].e_lambda == 1e-3
    assert fused.blocks[2].activaton is sigmoid  # adopted, not rebuilt
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
        y, mean, denom = torch.ops.attnkernels.simam_forward(x, 1e-4)
        dy = torch.randn(x.shape, generator=g).to(dtype).to(memory_format=fmt)
        out += [y, mean, denom, torch.ops.attnkernels.simam_backward(dy, x, mean, denom)]
torch.save(out, sys.argv[1])
"""


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_baseline_and_avx2_builds_give_the_same_bits(tmp_path):
    """The element loops' AVX2 instantiation and the baseline one round alike
    (the sigmoid's polynomial included: no FMA contraction either way)."""
    assert_same_bits_per_isa(_ISA_SCRIPT, tmp_path)
