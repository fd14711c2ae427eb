"""torch.compile(fullgraph=True) over the fused modules: no graph break, same numbers as eager."""
import copy

import pytest
import torch

from attnkernels import nn as fnn

from utils import fused_backends


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_se_compile_fullgraph(backend, device, compiler, fmt):
    if compiler == "inductor" and backend == "triton" and device == "cpu":
        pytest.skip("inductor on CPU with interpreted Triton kernels is not a supported pairing")
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
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_eca_compile_fullgraph(backend, device, compiler):
    if compiler == "inductor" and backend == "triton" and device == "cpu":
        pytest.skip("inductor on CPU with interpreted Triton kernels is not a supported pairing")
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


def _skip_interpreted_inductor(backend, device, compiler):
    if compiler == "inductor" and backend == "triton" and device == "cpu":
        pytest.skip("inductor on CPU with interpreted Triton kernels is not a supported pairing")


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
@pytest.mark.parametrize("flavour", ["timm", "official"])
def test_cbam_compile_fullgraph(backend, device, compiler, flavour):
    _skip_interpreted_inductor(backend, device, compiler)
    make = {"timm": lambda: fnn.CbamModule(16), "official": lambda: fnn.OfficialCBAM(16, 4)}[flavour]
    m = make().to(device)
    m.backend = backend
    x = torch.randn(2, 16, 5, 7, device=device).to(memory_format=torch.channels_last)
    _assert_compiled_matches_eager(m, x, compiler)


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_coord_compile_fullgraph(backend, device, compiler):
    _skip_interpreted_inductor(backend, device, compiler)
    m = fnn.CoordAtt(16, 16, reduction=4).to(device)
    m.backend = backend
    x = torch.randn(2, 16, 5, 7, device=device).to(memory_format=torch.channels_last)
    _assert_compiled_matches_eager(m, x, compiler)


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
@pytest.mark.parametrize("no_spatial", [False, True])
def test_triplet_compile_fullgraph(backend, device, compiler, no_spatial):
    _skip_interpreted_inductor(backend, device, compiler)
    m = fnn.TripletAttention(no_spatial=no_spatial).to(device)
    m.backend = backend
    x = torch.randn(2, 16, 5, 7, device=device).to(memory_format=torch.channels_last)
    _assert_compiled_matches_eager(m, x, compiler)
