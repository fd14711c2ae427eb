"""Every family under torch.use_deterministic_algorithms(True): no error (PyTorch's
own adaptive pooling backward, which upstream Coordinate Attention uses, raises
there on CUDA), and repeated runs bitwise equal (forward and every gradient), on
every backend here; the CPU kernels bitwise equal across processes and thread counts."""
import os
import subprocess
import sys

import pytest
import torch


import attnkernels
from flavours import FLAVOURS, TWO_RUNS
from utils import FORMATS, assert_same_runs, flavours_digest, fused_backends, run_module

TESTS = os.path.dirname(os.path.abspath(__file__))
# several channel blocks with a partial last one, several spatial tiles
MULTI_TILE = (3, 300, 17, 19)


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_deterministic_algorithms(backend, device, flavour):
    torch.manual_seed(0)
    m = FLAVOURS[flavour](8).to(device)
    m.backend = backend
    x = torch.randn(2, 8, 5, 6, device=device)
    dy = torch.randn_like(x)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert_same_runs([run_module(m, x, dy) for _ in range(2)])
    finally:
        torch.use_deterministic_algorithms(before)


# a module of each family and its channel count (TWO_RUNS of its test file),
# both memory formats: two runs alike


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("family", list(TWO_RUNS))
def test_two_runs_are_bitwise_equal(family, backend, device, fmt):
    make, channels = TWO_RUNS[family]
    m = make().to(device)
    m.backend = backend
    x = torch.randn(2, channels, 9, 7, device=device).to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    assert_same_runs([run_module(m, x, dy) for _ in range(2)])


DIGEST_SCRIPT = ("import sys, torch; sys.path.insert(0, {tests!r}); import utils; "
                 "torch.set_num_threads({threads}); "
                 "print(utils.flavours_digest({shape}, any_thread_count=True))")


@pytest.mark.skipif(attnkernels.available_backends()["cpu"] is not None,
                    reason="the C++ CPU extension is not built")
def test_cpu_kernels_give_the_same_bits_in_other_processes_and_at_any_thread_count():
    """The CPU kernels promise fixed-order reductions whatever the thread count:
    every flavour, forward and gradients, here and in fresh processes with 1, 2
    and the machine's thread count (another process: another heap, another
    allocation of every buffer)."""
    here = flavours_digest(MULTI_TILE, any_thread_count=True)
    for threads in sorted({1, 2, os.cpu_count() or 1}):
        out = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT.format(
            tests=TESTS, threads=threads, shape=MULTI_TILE)], capture_output=True, text=True,
            timeout=600, cwd=TESTS)  # not the root: the installed package, not the source tree
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1] == here, f"{threads} threads"
