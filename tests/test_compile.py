"""torch.compile(fullgraph=True) over the fused modules: no graph break, the numbers of
eager and of the float64 oracle."""
import copy
import os

import pytest
import torch

import attnkernels
from attnkernels import nn as fnn

from attnkernels.families import FAMILIES
from flavours import FLAVOURS, MAIN_FLAVOURS
from utils import (assert_matches_oracle, check_flavour_case, family_of, fused_backends,
                   parameter_terms,
                   run_module)

# The tests below hold the graph dynamo captures (aot_eager: the same ops as
# eager, so the same numbers) on every fused backend, the Triton interpreter
# included. Inductor's generated code is held to the float64 oracle by the
# matrix at the end (test_compiled_flavour_matches_float64; inductor with
# interpreted Triton kernels is not a supported pairing).
COMPILERS = ["aot_eager"]


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_se_compile_fullgraph(backend, device, compiler, fmt):
    torch._dynamo.reset()
    m = fnn.SEModule(16, add_maxpool=True).to(device)
    m.backend = backend
    x = torch.randn(2, 16, 5, 7, device=device).to(memory_format=fmt).requires_grad_()
    dy = torch.randn_like(x)
    y_eager = m(x)
    (dx_eager,) = torch.autograd.grad(y_eager, x, dy)
    compiled = torch.compile(m, fullgraph=True, backend=compiler)
    y = compiled(x)
    (dx,) = torch.autograd.grad(y, x, dy)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(dx, dx_eager)


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("compiler", COMPILERS)
def test_eca_compile_fullgraph(backend, device, compiler):
    m = fnn.CecaModule(16, act_layer=torch.nn.ReLU).to(device)
    m.backend = backend
    x = torch.randn(2, 16, 5, 7, device=device).to(memory_format=torch.channels_last)
    _assert_compiled_matches_eager(m, x, compiler)


def _assert_compiled_matches_eager(m, x, compiler):
    """Compiled (fullgraph) and eager copies of ``m``: same output, gradients and buffers
    (BatchNorm's running statistics included)."""
    torch._dynamo.reset()
    m_eager = copy.deepcopy(m)
    x = x.requires_grad_()
    dy = torch.randn_like(x)
    y_eager = m_eager(x)
    grads_eager = torch.autograd.grad(y_eager, [x, *m_eager.parameters()], dy)
    compiled = torch.compile(m, fullgraph=True, backend=compiler)
    y = compiled(x)
    grads = torch.autograd.grad(y, [x, *m.parameters()], dy)
    torch.testing.assert_close(y, y_eager)
    for g, g_eager in zip(grads, grads_eager):
        torch.testing.assert_close(g, g_eager)
    for (name, b), b_eager in zip(m.named_buffers(), m_eager.buffers()):
        torch.testing.assert_close(b, b_eager, msg=name)


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("flavour", ["timm", "official"])
def test_cbam_compile_fullgraph(backend, device, compiler, flavour):
    make = {"timm": lambda: fnn.CbamModule(16), "official": lambda: fnn.OfficialCBAM(16, 4)}[flavour]
    m = make().to(device)
    m.backend = backend
    x = torch.randn(2, 16, 5, 7, device=device).to(memory_format=torch.channels_last)
    _assert_compiled_matches_eager(m, x, compiler)


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("compiler", COMPILERS)
def test_coord_compile_fullgraph(backend, device, compiler):
    m = fnn.CoordAtt(16, 16, reduction=4).to(device)
    m.backend = backend
    x = torch.randn(2, 16, 5, 7, device=device).to(memory_format=torch.channels_last)
    _assert_compiled_matches_eager(m, x, compiler)


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("no_spatial", [False, True])
def test_triplet_compile_fullgraph(backend, device, compiler, no_spatial):
    m = fnn.TripletAttention(no_spatial=no_spatial).to(device)
    m.backend = backend
    x = torch.randn(2, 16, 5, 7, device=device).to(memory_format=torch.channels_last)
    _assert_compiled_matches_eager(m, x, compiler)


# Every flavour compiled (inductor, fullgraph) against the float64 oracle:
# forward, input and parameter gradients, BatchNorm's running statistics. The
# full matrix is C x spatial shape x layout x eval/train per flavour; CI runs a
# Latin slice of it: each flavour twice, at two of the Cs and two opposite
# combinations (eval and train, each layout, each shape), both rotating
# from flavour to flavour: each flavour meets both modes, layouts and shapes, a
# family of two flavours every C, one of four every combination (the fused op is
# opaque to inductor: C matters to the kernels, which the eager matrices hold
# at many Cs). ATTNKERNELS_COMPILE_MATRIX=full runs all of it (832 cases,
# about an hour on 2 cores).
COMPILE_CS = (16, 40, 72, 256)
COMPILE_COMBOS = [(hw, layout, train) for hw in ((5, 7), (17, 19))
                  for layout in ("nchw", "channels_last") for train in (False, True)]


def _compile_matrix():
    full = os.environ.get("ATTNKERNELS_COMPILE_MATRIX") == "full"
    cases = []
    for i, flavour in enumerate(sorted(FLAVOURS)):
        if full:
            cases += [(flavour, c, *combo) for c in COMPILE_CS for combo in COMPILE_COMBOS]
            continue
        first = 2 * i % len(COMPILE_COMBOS)  # an eval combination; the second is its opposite
        for k, combo in enumerate((first, len(COMPILE_COMBOS) - 1 - first)):  # in every axis
            cases.append((flavour, COMPILE_CS[(i + 2 * k) % len(COMPILE_CS)],
                          *COMPILE_COMBOS[combo]))
    return cases


@pytest.mark.parametrize("backend,device", [b for b in fused_backends() if b != ("triton", "cpu")])
@pytest.mark.parametrize("flavour,C,hw,layout,train", _compile_matrix(),
                         ids=[f"{f}-C{c}-{h}x{w}-{lay}-{'train' if t else 'eval'}"
                              for f, c, (h, w), lay, t in _compile_matrix()])
def test_compiled_flavour_matches_float64(backend, device, flavour, C, hw, layout, train):
    shape = (2, C, *hw)
    if not check_flavour_case(backend, device, flavour, shape, torch.float32, layout, train,
                              explicit=True, seed=C + hw[0], compiler="inductor"):
        pytest.skip("upstream refuses this case")


# Ties in every max-pool, compiled: the backward must route each tie as
# upstream does from what the forward saw, never from values inductor
# recomputed (the CBAM bug of issue 29: a gate recomputed one ulp off picked
# another maximum). Every max-pooling flavour (CBAM, Triplet, timm SE with
# add_maxpool), C = 40 (where that bug showed), both layouts, eval and train,
# exact ties and near-ties.
MAX_POOLING = sorted(f for f in FLAVOURS if f.startswith(("cbam", "triplet")) or "maxpool" in f)


@pytest.mark.parametrize("backend,device", [b for b in fused_backends() if b != ("triton", "cpu")])
@pytest.mark.parametrize("ties,layout,train", [
    (True, "nchw", False), (True, "nchw", True), (True, "channels_last", False),
    (True, "channels_last", True), ("near", "nchw", True), ("near", "channels_last", False)],
    ids=["ties-nchw-eval", "ties-nchw-train", "ties-cl-eval", "ties-cl-train",
         "near-nchw-train", "near-cl-eval"])
@pytest.mark.parametrize("flavour", MAX_POOLING)
def test_compiled_ties_route_as_upstream(backend, device, flavour, ties, layout, train):
    assert check_flavour_case(backend, device, flavour, (2, 40, 5, 7), torch.float32, layout,
                              train, explicit=True, seed=40, compiler="inductor", ties=ties)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("flavour", ["cbam_official", "cbam_ultralytics", "cbam_external"])
def test_compiled_converted_cbam_under_bfloat16_autocast(flavour, train):
    """Issue 29's case as a user meets it: the upstream CBAM, converted, compiled
    (inductor, fullgraph) and trained under bfloat16 autocast; its output and
    every gradient against float64. The fused module takes x as it comes (fp32
    here) and keeps its gate networks in fp32, so it is held to float32's
    bound, where eager's bf16 convolutions are far off."""
    if attnkernels.available_backends()["cpu"] is not None:
        pytest.skip("the C++ kernels are not built")
    torch.manual_seed(0)
    made = FLAVOURS[flavour](24)
    with torch.no_grad():
        for p in made.parameters():
            p.mul_(3.0)
    upstream = made.reference_module().train(train)
    oracle = copy.deepcopy(upstream).double()
    converted, report = attnkernels.convert(copy.deepcopy(upstream))
    assert type(converted) is type(made), str(report)
    converted.backend = "cpu"  # our ops: under auto, torch.compile gives CBAM to inductor
    x, dy = torch.randn(2, 24, 9, 11), torch.randn(2, 24, 9, 11)
    y_o, dx_o, dw_o = run_module(oracle, x.double(), dy.double())
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_e, dx_e, dw_e = run_module(upstream, x, dy)
        y_f, dx_f, dw_f = run_module(converted, x, dy,
                                     torch.compile(converted, fullgraph=True))
    assert y_f.dtype == torch.float32
    assert_matches_oracle(y_f, y_e, y_o, "y")
    assert_matches_oracle(dx_f, dx_e, dx_o, "dx")
    for name, g in dw_o.items():
        if g is not None:
            assert_matches_oracle(dw_f[name], dw_e[name], g, name, terms=parameter_terms(x.shape))
    for (name, b), b_o in zip(converted.named_buffers(), oracle.buffers()):
        torch.testing.assert_close(b.to(b_o.dtype), b_o, rtol=1e-5, atol=1e-6, msg=name)


# Families whose reference decomposition inductor fuses with the layers around
# them faster than it runs our opaque ops (_core.backend.select's inductor_fuses):
# under torch.compile, auto gives them to inductor (True), or only their
# forwards that autograd does not record ("without autograd": CBAM before torch 2.14).
INDUCTOR_FUSES = {f.name: f.functional.INDUCTOR_FUSES for f in FAMILIES
                  if getattr(f.functional, "INDUCTOR_FUSES", False)}


def _our_ops_in_graph(module, x):
    """The attnkernels operators in the graph dynamo captures for module(x)."""
    ops = set()

    def capture(gm, example_inputs):
        ops.update(str(n.target) for n in gm.graph.nodes
                   if n.op == "call_function" and str(n.target).startswith("attnkernels."))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(module, backend=capture, fullgraph=True)(x)
    return ops


@pytest.mark.skipif(attnkernels.available_backends()["cpu"] is not None,
                    reason="the C++ kernels are not built")
@pytest.mark.parametrize("flavour", MAIN_FLAVOURS)
def test_auto_under_compile_gives_inductor_what_it_fuses_better(flavour):
    """auto, traced by torch.compile: a family that inductor fuses better runs
    as its reference decomposition (no op of ours in the graph), the others as
    our ops; CBAM before torch 2.14 only where autograd records nothing; an
    explicit backend always as our ops."""
    cbam = True if torch.__version__ >= "2.14" else "without autograd"  # cbam/functional.py
    assert INDUCTOR_FUSES == {"se": True, "eca": True, "cbam": cbam,
                              "coord": True, "sk": True}  # as measured (docs/design.md)
    fused = FLAVOURS[flavour](16).eval()
    x = torch.randn(2, 16, 5, 7)
    given = INDUCTOR_FUSES.get(family_of(flavour), False)
    with torch.no_grad():
        assert bool(_our_ops_in_graph(fused, x)) == (not given)
    assert bool(_our_ops_in_graph(fused, x)) == (given is not True)  # the weights need grads
    fused.backend = "cpu"
    with torch.no_grad():
        assert _our_ops_in_graph(fused, x)


@pytest.mark.skipif(attnkernels.available_backends()["cpu"] is not None,
                    reason="the C++ kernels are not built")
@pytest.mark.parametrize("flavour,train", [
    (f, i % 2 == 0) for i, f in enumerate(sorted(f for f in FLAVOURS
                                                 if family_of(f) in INDUCTOR_FUSES))])
def test_auto_under_compile_matches_eager_and_float64(flavour, train):
    """The path auto takes under torch.compile for those families (inductor on
    the reference decomposition; before torch 2.14 CBAM's training path is our
    ops): forward, every gradient and the BatchNorm statistics against eager and
    float64, as the fused ops are held (each flavour in one mode, the modes
    alternating); then the forward where autograd records nothing (before 2.14
    the only path CBAM gives to inductor), BatchNorm statistics included."""
    for grad in (True, False):
        assert check_flavour_case("cpu", "cpu", flavour, (2, 40, 9, 7), torch.float32, "nchw",
                                  train, explicit=False, seed=40, compiler="inductor", grad=grad)
