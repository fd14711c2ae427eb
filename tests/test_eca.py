"""Efficient Channel Attention: every flavour x dtype x memory format x awkward
shape x backend, forward and all gradients against the float64 reference module."""
import pytest
import torch
from torch import nn

import attnkernels
from attnkernels import functional as F
from attnkernels import nn as fnn
from attnkernels import reference as ref

import utils
from utils import BACKENDS, FORMATS, MODULE_DTYPES as DTYPES
from utils import (assert_flavour_matches_reference, assert_same_runs,
                   matrix_cases, runs_per_thread_count)

SHAPES = [(2, 24, 7, 9), (1, 13, 1, 1), (3, 8, 5, 1), (2, 32, 16, 16)]

# name -> C -> fused module (its reference twin is built from the same class's base)
FLAVOURS = {
    "official_k3": lambda C: fnn.ECALayer(C, 3),
    "official_k7": lambda C: fnn.ECALayer(C, 7),
    "seed": lambda C: fnn.ECABlock(C),
    "seed_attention_bias": lambda C: fnn.ECAAttention(5),
    "timm": lambda C: fnn.EcaModule(C),
    "timm_hard_sigmoid": lambda C: fnn.EcaModule(kernel_size=5, gate_layer="hard_sigmoid"),
    "timm_circular": lambda C: fnn.CecaModule(C),
    "timm_circular_bias_k9": lambda C: fnn.CecaModule(kernel_size=9, act_layer=nn.ReLU),
}


# The shared matrices' flavours (tests/flavours.py: compile, determinism, fuzz,
# extremes, tiles, emulated CUDA): name -> C -> a fused module, any C >= 1.
SHARED_FLAVOURS = {
    "timm": lambda C: fnn.EcaModule(C),
    "official": lambda C: fnn.ECALayer(C, 3),
    "ceca": lambda C: fnn.CecaModule(C),
}

# The shared tests' other entries (tests/flavours.py): the main flavour (a
# SHARED_FLAVOURS key: realistic sizes in test_tiles), shapes whose Triton
# launches cross every tile, the two-runs determinism module and its C, and
# the forward op with arguments (test_op_outputs; x is (2, 6, 3, 5), w(*shape)
# a parameter).
MAIN_FLAVOUR = "timm"
TRITON_TILE_SHAPES = {"timm": (1, 1101, 11, 13)}  # C past the 1024-wide gate blocks
TWO_RUNS = (lambda: fnn.CecaModule(24, act_layer=nn.ReLU), 24)


def forward_op_case(backend, x, w):
    if backend == "triton":
        from attnkernels.eca import triton as _  # noqa: F401  (registers the *_triton ops)
    op = getattr(torch.ops.attnkernels, "eca_forward" + ("_triton" if backend == "triton" else ""))
    return op.default, (x, w(3), None, False, 0)


reference_twin = utils.reference_twin


@pytest.mark.parametrize("backend,device,flavour,dtype,fmt,shape",
                         list(matrix_cases(FLAVOURS, DTYPES, FORMATS, SHAPES)))
def test_matches_reference(backend, device, flavour, dtype, fmt, shape):
    fused = FLAVOURS[flavour](shape[1]).to(device)
    if isinstance(fused, fnn.CecaModule) and fused.padding > shape[1]:
        pytest.skip("circular padding wider than the channel axis is an error upstream too")
    assert_flavour_matches_reference(fused, backend, dtype, fmt, shape, device)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("k,circular,with_bias,gate", [
    (3, False, False, "sigmoid"),
    (5, True, True, "sigmoid"),
    (7, False, True, "hard_sigmoid"),
    (9, True, False, "hard_sigmoid"),  # wider than the channel axis: wraps around
])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_gradcheck(backend, device, k, circular, with_bias, gate, fmt):
    kw = dict(dtype=torch.float64, device=device, requires_grad=True)
    C = 4 if k == 9 else 6
    # the Triton interpreter is slow: a smaller x there
    B, H, W = (1, 2, 2) if (backend, device) == ("triton", "cpu") else (2, 3, 4)
    x = torch.randn(B, C, H, W, **kw).detach().to(memory_format=FORMATS[fmt]).requires_grad_()
    w = torch.randn(k, **kw)
    b = torch.randn(1, **kw) if with_bias else None

    def f(x, w, b):
        return F.efficient_channel_attention(x, w, b, circular=circular, gate=gate, backend=backend)

    assert utils.gradcheck(f, (x, w, b), backend, device)


@pytest.mark.skipif(attnkernels.available_backends()["cpu"] is not None,
                    reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 7])
def test_cpu_independent_of_thread_count(fmt, batch):
    m = fnn.EcaModule(24)
    m.backend = "cpu"
    x = torch.randn(batch, 24, 9, 7).to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    assert_same_runs(runs_per_thread_count(m, x, dy))


test_zero_size = utils.zero_size_test(fnn.EcaModule)


@pytest.mark.skipif(attnkernels.available_backends()["cpu"] is not None, reason="no C++ extension")
@pytest.mark.parametrize("circular,with_bias", [(False, False), (True, True)])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_opcheck(circular, with_bias, fmt):
    x = torch.randn(2, 6, 3, 5).to(memory_format=FORMATS[fmt]).requires_grad_()
    w = torch.randn(3, requires_grad=True)
    b = torch.randn(1, requires_grad=True) if with_bias else None
    torch.library.opcheck(torch.ops.attnkernels.eca_forward.default, (x, w, b, circular, 0))
    with torch.no_grad():
        y, pooled = torch.ops.attnkernels.eca_forward(x, w, b, circular, 0)
    dy = torch.randn_like(y)
    torch.library.opcheck(torch.ops.attnkernels.eca_backward.default,
                          (dy, x.detach(), pooled, w.detach(),
                           None if b is None else b.detach(), circular, 0))


def test_use_mlp_runs_reference_under_auto_and_raises_when_explicit():
    utils.assert_reference_under_auto_and_raises_when_explicit(
        fnn.EcaModule(16, use_mlp=True), torch.randn(2, 16, 3, 3), "use_mlp")


@pytest.mark.parametrize("mutate,error,match", [
    (lambda a: {**a, "x": a["x"][0]}, ValueError, "x must be a 4-D"),
    (lambda a: {**a, "x": a["x"].long()}, TypeError, "x must be a floating-point"),
    (lambda a: {**a, "weight": torch.randn(4)}, ValueError, "weight must be a .* k odd"),
    (lambda a: {**a, "weight": torch.randn(2, 3)}, ValueError, "weight must be a .* k odd"),
    (lambda a: {**a, "bias": torch.randn(2)}, ValueError, "bias must have shape"),
    (lambda a: {**a, "weight": torch.randn(3, dtype=torch.float64).to(torch.int32)}, TypeError,
     "weight must be a floating-point"),
    (lambda a: {**a, "gate": "tanh"}, ValueError, "gate must be one of"),
    (lambda a: {**a, "weight": torch.randn(11), "circular": True}, ValueError,
     "circular padding of 5 channels"),
])
def test_bad_input_names_the_argument(mutate, error, match):
    args = mutate({"x": torch.randn(2, 4, 3, 3), "weight": torch.randn(3), "bias": torch.randn(1),
                   "circular": False, "gate": "sigmoid"})
    with pytest.raises(error, match=match):
        F.efficient_channel_attention(args["x"], args["weight"], args["bias"],
                                      circular=args["circular"], gate=args["gate"])


@pytest.mark.skipif(attnkernels.available_backends()["cpu"] is not None, reason="no C++ extension")
def test_compiled_op_checks_its_arguments():
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(RuntimeError, match="weight must be a 1-D tensor of odd size"):
        torch.ops.attnkernels.eca_forward(x, torch.randn(4), None, False, 0)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        torch.ops.attnkernels.eca_forward(x, torch.randn(3), torch.randn(2), False, 0)


def test_flavour_factory_and_state_dict_keys():
    assert type(fnn.EfficientChannelAttention(64)) is fnn.EcaModule
    m = fnn.EfficientChannelAttention(256, flavour="timm_circular")
    assert isinstance(m, ref.CecaModule) and m.conv.weight.shape == (1, 1, 5)
    assert set(fnn.ECAAttention(3).state_dict()) == {"conv.weight", "conv.bias"}
    assert set(fnn.ECABlock(256).state_dict()) == {"conv.weight"}
    assert fnn.ECABlock(256).conv.kernel_size == (5,)
    with pytest.raises(ValueError, match="unknown ECA flavour"):
        fnn.EfficientChannelAttention(64, flavour="nope")
    # state dicts move both ways between the reference and the fused class
    r = ref.EcaModule(64)
    f = fnn.EcaModule(64)
    f.load_state_dict(r.state_dict())
    r.load_state_dict(f.state_dict())
