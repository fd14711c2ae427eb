"""Tensors above 2^31 elements (int64 indexing) on the CPU kernels and, where a
GPU is present, on the CUDA and Triton kernels: a batch of identical samples,
so that every sample's output, the last ones past element 2^31 included, must
equal the first sample's, bitwise (samples are independent in eval mode, and
the kernels do not depend on the batch split). The first equals a lone
sample's output to fp16 rounding: the gate networks' GEMMs round a one-row
product differently from a many-row one, though identical rows of one product
come out identical. The forward needs about 10 GB free, the backward about
19 GB (x, y, dy and dx are 4.3 GB each in fp16), in host memory for the CPU
and in GPU memory for the GPU; each case is skipped where memory does not allow."""
import fcntl
import math
import os
import tempfile

import pytest
import torch

from attnkernels import nn as fnn
from utils import fused_backends

SAMPLE = (1, 64, 64, 64)  # 2^18 elements
BATCH = 2**31 // (64 * 64 * 64) + 2  # just over 2^31 elements in all


def _available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return 0.0


@pytest.fixture(autouse=True)
def _one_large_case_at_a_time():
    """pytest-xdist's workers (and concurrent pytest runs) take these cases one
    at a time: each checks that its memory is free, and two at once would need twice it."""
    with open(os.path.join(tempfile.gettempdir(), "attnkernels-test-large.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _skip_unless_free(device: str, gb: float) -> None:
    free = (_available_gb() if device == "cpu"
            else torch.cuda.mem_get_info()[0] / 2**30)  # read here: no CUDA at collection
    if free < gb:
        pytest.skip(f"needs about {gb} GB of free {device} memory, {free:.1f} GB free")


# the compiled CPU kernels, and every backend that runs on a GPU (the Triton
# interpreter on the CPU would take hours)
BACKENDS = [(b, d) for b, d in fused_backends() if d == "cuda" or b == "cpu"]


def _checked_samples():
    """The samples on either side of element 2^31, and the last."""
    last_below = (2**31 - 1) // math.prod(SAMPLE)  # the sample holding element 2^31 - 1
    return last_below, last_below + 1, BATCH - 1


MODULES = {
    "se": lambda: fnn.SEModule(64),
    "eca": lambda: fnn.EcaModule(64),
    "cbam": lambda: fnn.CbamModule(64),
    "coord": lambda: fnn.CoordAttn(64),
    "triplet": lambda: fnn.TripletAttention(),
}


@pytest.mark.slow
@pytest.mark.large_memory
@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("family", list(MODULES))
def test_forward_above_2_31_elements(family, backend, device):
    _skip_unless_free(device, 12)
    m = MODULES[family]().eval().half().to(device)
    m.backend = backend
    small = torch.randn(SAMPLE).half().to(device)
    with torch.no_grad():
        expected = m(small)[0]
        x = small.expand(BATCH, -1, -1, -1).contiguous()
        assert x.numel() > 2**31
        y = m(x)
    del x
    for n in _checked_samples():
        assert torch.equal(y[n], y[0]), f"sample {n} of {BATCH}"
    torch.testing.assert_close(y[0], expected)  # fp16: rtol 1e-3, atol 1e-5


@pytest.mark.slow
@pytest.mark.large_memory
@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("family", list(MODULES))
def test_backward_above_2_31_elements(family, backend, device):
    """dx of every sample, those past element 2^31 included, equals the first
    sample's bitwise; the first equals a lone sample's dx, and each parameter's
    gradient BATCH times a lone sample's, to fp16 rounding."""
    _skip_unless_free(device, 19)
    m = MODULES[family]().eval().half().to(device)
    m.backend = backend
    names, params = zip(*((n, p) for n, p in m.named_parameters() if p.requires_grad))
    small = torch.randn(SAMPLE).half().to(device).requires_grad_()
    # summed over BATCH samples: stays finite in fp16
    small_dy = (torch.randn(SAMPLE) / 512).half().to(device)
    expected = torch.autograd.grad(m(small), [small, *params], small_dy)
    dy = small_dy.expand(BATCH, -1, -1, -1).contiguous()
    x = small.detach().expand(BATCH, -1, -1, -1).contiguous().requires_grad_()
    assert x.numel() > 2**31
    grads = torch.autograd.grad(m(x), [x, *params], dy)  # y is freed once the graph runs
    del x, dy
    dx = grads[0]
    for n in _checked_samples():
        assert torch.equal(dx[n], dx[0]), f"sample {n} of {BATCH}"
    torch.testing.assert_close(dx[0], expected[0][0])
    # A parameter's gradient sums BATCH equal per-sample terms: both sides are
    # one fp16 rounding of (nearly) the same number.
    for name, got, lone in zip(names, grads[1:], expected[1:]):
        torch.testing.assert_close(got.float(), lone.float() * BATCH, rtol=2e-3,
                                   atol=1e-5 * BATCH, msg=lambda s: f"{name}: {s}")
