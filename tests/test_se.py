"""Squeeze-and-Excitation: every flavour x dtype x memory format x awkward shape
x backend, forward and all gradients against the float64 reference module."""
import pytest
import torch
from torch import nn

import attnkernels
from attnkernels import nn as fnn

import utils
from utils import BACKENDS, FORMATS, assert_matches_oracle
from utils import assert_same_runs, run_module, runs_per_thread_count


def _bn_eval(C):
    m = fnn.SEModule(C, norm_layer=nn.BatchNorm2d)
    bn = m.bn
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return m.eval()


# name -> C -> fused module (its reference twin is built from the same class's base)
FLAVOURS = {
    "seed": lambda C: fnn.SELayer(C, 4),
    "seed_width1": lambda C: fnn.SELayer(C, C),
    "torchvision": lambda C: fnn.SqueezeExcitation(C, max(1, C // 4)),
    "torchvision_mbv3": lambda C: fnn.SqueezeExcitation(C, max(1, C // 4),
                                                        scale_activation=nn.Hardsigmoid),
    "torchvision_effnet": lambda C: fnn.SqueezeExcitation(C, max(1, C // 4), activation=nn.SiLU),
    "timm": lambda C: fnn.SEModule(C),
    "timm_maxpool_hardswish": lambda C: fnn.SEModule(C, add_maxpool=True, bias=False,
                                                     act_layer=nn.Hardswish,
                                                     gate_layer="hard_sigmoid"),
    "timm_bn_eval": _bn_eval,
    "timm_efficientnet": lambda C: fnn.EfficientNetSqueezeExcite(C, act_layer=nn.SiLU),
    "timm_effective": lambda C: fnn.EffectiveSEModule(C),
    "timm_effective_maxpool": lambda C: fnn.EffectiveSEModule(C, add_maxpool=True),
    "senet": lambda C: fnn.LegacySEModule(C, 4),
}


# The shared matrices' flavours (tests/flavours.py: compile, determinism, fuzz,
# extremes, tiles, emulated CUDA): name -> C -> a fused module, any C >= 1.
SHARED_FLAVOURS = {
    "timm": lambda C: fnn.SEModule(C, rd_ratio=0.5, rd_divisor=1),
    "timm_maxpool": lambda C: fnn.SEModule(C, rd_ratio=0.5, rd_divisor=1, add_maxpool=True),
    "seed": lambda C: fnn.SELayer(C, reduction=1),
    "torchvision": lambda C: fnn.SqueezeExcitation(C, max(1, C // 2)),
    "ultralytics": lambda C: fnn.UltralyticsChannelAttention(C),  # one C -> C layer
}

# The shared tests' other entries (tests/flavours.py): the main flavour (a
# SHARED_FLAVOURS key: realistic sizes in test_tiles), shapes whose Triton
# launches cross every tile, the two-runs determinism module and its C, and
# the forward op with arguments (test_op_outputs; x is (2, 6, 3, 5), w(*shape)
# a parameter).
MAIN_FLAVOUR = "timm"
# C = 1101 past the gate kernels' 1024-wide blocks (R = C with reduction 1)
# and odd; 11x13 = 143 positions past 128-position blocks
TRITON_TILE_SHAPES = {"seed": (1, 1101, 11, 13),
                      "ultralytics": (1, 1101, 11, 13)}  # one-layer gate: one C x C matrix
TWO_RUNS = (lambda: fnn.SEModule(24, add_maxpool=True), 24)


def forward_op_case(backend, x, w):
    if backend == "triton":
        from attnkernels.se import triton as _  # noqa: F401  (registers the *_triton ops)
    op = getattr(torch.ops.attnkernels, "se_forward" + ("_triton" if backend == "triton" else ""))
    return op.default, (x, w(3, 6), None, w(6, 3), None, 1, 1, 0)
SHAPES = [(2, 24, 7, 9), (1, 13, 1, 1), (3, 8, 5, 1), (2, 32, 16, 16)]


reference_twin = utils.reference_twin


test_matches_reference = utils.flavour_matrix_test(FLAVOURS, SHAPES)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("two_layer,pool,act,gate", [
    (True, "avg", "relu", "sigmoid"),
    (True, "avg_max", "silu", "hard_sigmoid"),
    (True, "avg", "hardswish", "sigmoid"),
    (False, "avg_max", "identity", "sigmoid"),
])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_gradcheck(backend, device, two_layer, pool, act, gate, fmt):
    B, C, R, H, W = 2, 5, 3, 3, 4
    kw = dict(dtype=torch.float64, device=device, requires_grad=True)
    x = torch.randn(B, C, H, W, **kw).detach().to(memory_format=FORMATS[fmt]).requires_grad_()
    if two_layer:
        w1, b1 = torch.randn(R, C, **kw), torch.randn(R, **kw)
        w2, b2 = torch.randn(C, R, **kw), torch.randn(C, **kw)
    else:
        w1, b1, w2, b2 = torch.randn(C, C, **kw), torch.randn(C, **kw), None, None

    def f(x, w1, b1, w2, b2):
        return attnkernels.functional.squeeze_excite(x, w1, b1, w2, b2, pool=pool, act=act,
                                                     gate=gate, backend=backend)

    inputs = (x, w1, b1, w2, b2)
    assert utils.gradcheck(f, inputs, backend, device)


@pytest.mark.skipif(attnkernels.available_backends()["cpu"] is not None,
                    reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 2, 7])
@pytest.mark.parametrize("hw", [(9, 7), (3, 1)])
def test_cpu_independent_of_thread_count(fmt, batch, hw):
    # The CPU kernels split samples between threads when there are enough of them
    # (pipelining one sample's reduction with the previous sample's apply), split
    # channels otherwise, and run a gate network that outweighs its sample (3x1
    # here) batched: every path must give bitwise the same numbers.
    m = fnn.SEModule(24, add_maxpool=True)
    m.backend = "cpu"
    x = torch.randn(batch, 24, *hw).to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    runs = runs_per_thread_count(m, x, dy)
    assert_same_runs(runs)
    y0, dx0, dw0 = runs[0]
    y_eager, dx_eager, _ = run_module(reference_twin(m), x, dy)
    y_ref, dx_ref, _ = run_module(reference_twin(m).double(), x.double(), dy.double())
    assert_matches_oracle(y0, y_eager, y_ref, "y")
    assert_matches_oracle(dx0, dx_eager, dx_ref, "dx")


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_max_ties_share_gradient(backend, device):
    # amax spreads its gradient evenly over tied maxima; the fused kernels count them.
    m = fnn.EffectiveSEModule(4, add_maxpool=True).to(device).double()
    m.backend = backend
    x = torch.randint(-2, 3, (2, 4, 3, 3), device=device).double()
    dy = torch.randn_like(x)
    _, dx_f, dw_f = run_module(m, x, dy)
    _, dx_r, dw_r = run_module(reference_twin(m), x, dy)
    torch.testing.assert_close(dx_f, dx_r)
    for n in dw_r:
        torch.testing.assert_close(dw_f[n], dw_r[n])


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_max_propagates_nan(backend, device):
    m = fnn.EffectiveSEModule(4, add_maxpool=True).to(device)
    m.backend = backend
    x = torch.randn(2, 4, 3, 3, device=device)
    x[1, 2, 1, 1] = float("nan")
    y_f, y_r = m(x), reference_twin(m)(x)
    assert torch.equal(y_f.isnan(), y_r.isnan())
    torch.testing.assert_close(y_f[0], y_r[0])


test_zero_size = utils.zero_size_test(fnn.SEModule, [(0, 8, 4, 4), pytest.param(
    (2, 8, 0, 3), marks=pytest.mark.xfail(
        strict=True, reason="known difference: on an empty plane upstream's mean over nothing is "
        "NaN and so are all its gate gradients; the fused backward returns zero bias gradients"))])


@pytest.mark.skipif(not attnkernels.available_backends()["cpu"] is None, reason="no C++ extension")
@pytest.mark.parametrize("pool,two_layer", [(0, True), (1, True), (1, False)])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_opcheck(pool, two_layer, fmt):
    C, R = 6, 6 if not two_layer else 3
    x = torch.randn(2, C, 3, 5).to(memory_format=FORMATS[fmt]).requires_grad_()
    w1, b1 = torch.randn(R, C, requires_grad=True), torch.randn(R, requires_grad=True)
    w2 = torch.randn(C, R, requires_grad=True) if two_layer else None
    b2 = torch.randn(C, requires_grad=True) if two_layer else None
    act = 1 if two_layer else 0
    torch.library.opcheck(torch.ops.attnkernels.se_forward.default,
                          (x, w1, b1, w2, b2, pool, act, 0))
    with torch.no_grad():
        y, pooled, xmax = torch.ops.attnkernels.se_forward(x, w1, b1, w2, b2, pool, act, 0)
    dy = torch.randn_like(y)
    torch.library.opcheck(torch.ops.attnkernels.se_backward.default,
                          (dy, x.detach(), pooled, xmax, w1.detach(), b1.detach(),
                           None if w2 is None else w2.detach(),
                           None if b2 is None else b2.detach(), pool, act, 0))
