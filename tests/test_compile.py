"""torch.compile(fullgraph=True) over the fused modules: no graph break, the numbers of\neager and of the float64 oracle."""
import copy
import os

import pytest
import torch

from attnkernels import nn as fnn

from utils import FLAVOURS, check_flavour_case, fused_backends

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
    torch._dynamo.reset()
    m = fnn.CecaModule(16, act_layer=torch.nn.ReLU).to(device)
    m.backend = backend
    x = torch.randn(2, 16, 5, 7, device=device).to(memory_format=torch.channels_last).requires_grad_()
    dy = torch.randn_like(x)
    y_eager = m(x)
    grads_eager = torch.autograd.grad(y_eager, [x, *m.parameters()], dy)
    compiled = torch.compile(m, fullgraph=True, backend=compiler)
    y = compiled(x)
    grads = torch.autograd.grad(y, [x, *m.parameters()], dy)
    torch.testing.assert_close(y, y_eager)
    for g, g_eager in zip(grads, grads_eager):
        torch.testing.assert_close(g, g_eager)


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
# Latin slice of it (each flavour at every C, the other three axes rotating so
# that each family meets every combination), ATTNKERNELS_COMPILE_MATRIX=full
# runs all of it (about 40 minutes on 2 cores).
COMPILE_CS = (16, 40, 72, 256)
COMPILE_COMBOS = [(hw, layout, train) for hw in ((5, 7), (17, 19))
                  for layout in ("nchw", "channels_last") for train in (False, True)]


def _compile_matrix():
    full = os.environ.get("ATTNKERNELS_COMPILE_MATRIX") == "full"
    cases = []
    for i, flavour in enumerate(sorted(FLAVOURS)):
        for j, c in enumerate(COMPILE_CS):
            combos = COMPILE_COMBOS if full else [
                COMPILE_COMBOS[(i + 3 * j) % len(COMPILE_COMBOS)]]
            cases += [(flavour, c, *combo) for combo in combos]
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
# another maximum). The max-pooling families, C = 40 (where that bug showed),
# both layouts, eval and train.
MAX_POOLING = sorted(f for f in FLAVOURS if f.startswith(("cbam", "triplet")))


@pytest.mark.parametrize("backend,device", [b for b in fused_backends() if b != ("triton", "cpu")])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("flavour", MAX_POOLING)
def test_compiled_ties_route_as_upstream(backend, device, flavour, layout, train):
    assert check_flavour_case(backend, device, flavour, (2, 40, 5, 7), torch.float32, layout,
                              train, explicit=True, seed=40, compiler="inductor", ties=True)
