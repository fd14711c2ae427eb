"""The CUDA and Triton backends inside CUDA graphs, on a non-default stream and
on a device other than the current one. Every test here needs a GPU and skips
without one (written without a GPU at hand: the first GPU session runs them).

- CUDA graph capture and replay give what eager calls give, bitwise, for
  inference and for a training step (forward, backward; BatchNorm's running
  statistics updated in place). Triton autotunes during the warm-up, before the
  capture, as any kernel that benchmarks itself must.
- A non-default stream is honoured: the input is written on that stream behind
  a long sleep, so a kernel launched on another stream would read it unwritten.
- The device guard: a module and its input on cuda:1 while cuda:0 is current."""
import contextlib

import pytest
import torch

from flavours import FLAVOURS
from utils import fused_backends, run_module

GPU_BACKENDS = [(b, d) for b, d in fused_backends() if d == "cuda"]
pytestmark = pytest.mark.skipif(not GPU_BACKENDS, reason="needs a CUDA device and a GPU backend")
CASES = sorted(FLAVOURS)


def _module(flavour, backend, train):
    torch.manual_seed(0)
    m = FLAVOURS[flavour](16).cuda().train(train)
    m.backend = backend
    return m


@contextlib.contextmanager
def _side_stream():
    """The block runs on a new stream, after the current stream's work; the
    current stream's later work waits for it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream().wait_stream(side)


def _warm_up(fn, times=3):
    """Calls before a capture, on a side stream (cuBLAS handles, Triton's autotuning)."""
    with _side_stream():
        for _ in range(times):
            fn()
    torch.cuda.synchronize()


@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
@pytest.mark.parametrize("flavour", CASES)
def test_graph_replay_equals_eager_inference(backend, device, flavour):
    m = _module(flavour, backend, train=False)
    static_x = torch.randn(2, 16, 9, 7, device="cuda")
    with torch.no_grad():
        _warm_up(lambda: m(static_x))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = m(static_x)
        for seed in range(2):
            torch.manual_seed(seed)
            static_x.copy_(torch.randn_like(static_x))
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(static_y, m(static_x))


@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
@pytest.mark.parametrize("flavour", CASES)
def test_graph_replay_equals_eager_training_step(backend, device, flavour):
    """Forward and backward captured as one graph (static x, dy and .grad
    buffers); BatchNorm's running statistics move by the same amounts."""
    m = _module(flavour, backend, train=True)
    twin = _module(flavour, backend, train=True)
    static_x = torch.randn(2, 16, 9, 7, device="cuda", requires_grad=True)
    static_dy = torch.randn(2, 16, 9, 7, device="cuda")

    def step():
        m.zero_grad(set_to_none=False)
        static_x.grad = None
        y = m(static_x)
        y.backward(static_dy)
        return y

    _warm_up(step)
    twin.load_state_dict(m.state_dict())  # the warm-up moved the running statistics
    # static .grad buffers, zeroed inside the graph: each replay's gradients alone
    for t in [static_x, *m.parameters()]:
        t.grad = torch.zeros_like(t)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for t in [static_x, *m.parameters()]:
            t.grad.zero_()
        static_y = m(static_x)
        static_y.backward(static_dy)
    # the capture ran no kernels: the state is still the twin's
    torch.manual_seed(1)
    static_x.data.copy_(torch.randn_like(static_x))
    static_dy.copy_(torch.randn_like(static_dy))
    graph.replay()
    torch.cuda.synchronize()
    y, dx, grads = run_module(twin, static_x.detach(), static_dy)
    assert torch.equal(static_y, y) and torch.equal(static_x.grad, dx)
    for name, p in m.named_parameters():
        if grads[name] is not None:
            assert torch.equal(p.grad, grads[name]), name
    for (name, b), b_twin in zip(m.named_buffers(), twin.buffers()):
        assert torch.equal(b, b_twin), name


@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
@pytest.mark.parametrize("flavour", CASES)
def test_non_default_stream_is_honoured(backend, device, flavour):
    m = _module(flavour, backend, train=False)
    x = torch.randn(8, 16, 33, 35, device="cuda")
    with torch.no_grad():
        want = m(x)
        torch.cuda.synchronize()
        with _side_stream():
            torch.cuda._sleep(50_000_000)  # tens of ms: x_late is written long after the launch
            x_late = x * 1
            got = m(x_late)
        torch.cuda.synchronize()
    assert torch.equal(got, want)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("backend,device", GPU_BACKENDS)
@pytest.mark.parametrize("flavour", CASES)
def test_device_guard_runs_on_the_inputs_device(backend, device, flavour):
    torch.manual_seed(0)
    m = FLAVOURS[flavour](16)
    m.backend = backend
    x = torch.randn(2, 16, 9, 7)
    dy = torch.randn_like(x)
    want = run_module(m.to("cuda:0"), x.to("cuda:0"), dy.to("cuda:0"))
    with torch.cuda.device(0):
        got = run_module(m.to("cuda:1"), x.to("cuda:1"), dy.to("cuda:1"))
    assert got[0].device == torch.device("cuda:1")
    assert torch.equal(got[0].cpu(), want[0].cpu()) and torch.equal(got[1].cpu(), want[1].cpu())
