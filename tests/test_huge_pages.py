"""The CPU ops' x-sized outputs (y and dx) are advised onto transparent huge
pages (csrc/cpu/outputs.cpp), and ATTNKERNELS_HUGE_PAGES=0 turns that off; a
freed large output's memory waits in a bounded pool for the next output of its
size (ATTNKERNELS_CPU_OUTPUT_CACHE_MB), seen by the profiler while in use."""
import os
import subprocess
import sys

import pytest
import torch

from flavours import FLAVOURS, MAIN_FLAVOURS
from utils import HAS_CPU

THP_SYSFS = "/sys/kernel/mm/transparent_hugepage/enabled"
pytestmark = [
    pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built"),
    pytest.mark.skipif(not os.path.exists(THP_SYSFS), reason="no transparent huge pages here"),
]

HUGE_PAGE = 2 << 20
# 34.6 MB fp32: above glibc's largest dynamic mmap threshold (32 MB), so in a
# fresh process these tensors are fresh mappings.
LARGE = (2, 64, 256, 264)


def vm_flags(address):
    """The VmFlags of the mapping of this process that holds ``address``."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def is_advised(t):
    """Whether the first whole 2 MB page inside t's data is advised (madvise's 'hg')."""
    first = (t.data_ptr() + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE
    assert first + HUGE_PAGE <= t.data_ptr() + t.nbytes
    return "hg" in vm_flags(first)


def outputs(flavour, shape):
    """y and dx of the flavour's CPU kernels for an x of this shape."""
    torch.manual_seed(0)
    module = FLAVOURS[flavour](shape[1])
    module.backend = "cpu"
    x = torch.randn(shape, requires_grad=True)
    y = module(x)
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y))
    return y, dx


def in_a_fresh_process(code, **env):
    """What ``python -c code`` prints, run from this folder with env added."""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True,
                          text=True, check=True).stdout


def advice_in_a_fresh_process(flavour, **env):
    """Whether y, dx and a torch.empty of the same size are advised, checked in a
    fresh process: in a long one, a large tensor may come from heap memory that
    an earlier, freed output had advised, which would pass any tensor (or fail
    the control)."""
    code = ("import torch, test_huge_pages as t; y, dx = t.outputs(%r, t.LARGE); "
            "print(t.is_advised(y), t.is_advised(dx), t.is_advised(torch.empty(t.LARGE)))"
            % flavour)
    out = in_a_fresh_process(code, **env)
    return dict(zip(["y", "dx", "control"], (v == "True" for v in out.split())))


# Outputs that are PyTorch's own tensors: Selective Kernel's and CoT's dx come
# from their convolutions' backward (library layers).
PYTORCH_OUTPUTS = {"sk_seed": {"dx"}, "cot_external": {"dx"}}


# Each family's main flavour (one process each, ~9 s): every family's CPU ops
# allocate y and dx through the one helper.
@pytest.mark.parametrize("flavour", MAIN_FLAVOURS)
def test_large_outputs_are_advised(flavour):
    theirs = PYTORCH_OUTPUTS.get(flavour, set())
    assert advice_in_a_fresh_process(flavour) == {"y": "y" not in theirs,
                                                  "dx": "dx" not in theirs, "control": False}


def test_the_switch_turns_it_off():
    """Read once per process."""
    advice = advice_in_a_fresh_process("se_timm", ATTNKERNELS_HUGE_PAGES="0")
    assert advice == {"y": False, "dx": False, "control": False}


def step_faults(flavour):
    """Minor page faults of a second forward+backward on the same x and dy,
    after the first one's y and dx were freed."""
    import resource

    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # noqa: E731
    torch.manual_seed(0)
    module = FLAVOURS[flavour](LARGE[1])
    module.backend = "cpu"
    x, dy = torch.randn(LARGE, requires_grad=True), torch.randn(LARGE)
    torch.autograd.grad(module(x), x, dy)
    before = faults()
    torch.autograd.grad(module(x), x, dy)
    return faults() - before


def faults_in_a_fresh_process(flavour, **env):
    code = "import test_huge_pages as t; print(t.step_faults(%r))" % flavour
    return int(in_a_fresh_process(code, **env))


def test_freed_outputs_are_reused_within_the_pool_limit():
    """A freed large output waits for the next one of its size: the second
    step's y and dx (34.6 MB each) fault no page in (the gate network's small
    tensors may: well under a quarter of one fresh output's 8448 4 KB pages);
    with the pool off, or a limit under one output, they fault all of theirs in."""
    pages = LARGE[0] * LARGE[1] * LARGE[2] * LARGE[3] * 4 // 4096
    faults = faults_in_a_fresh_process("se_timm")
    assert faults < pages // 4, faults
    for limit in ("0", "20"):
        faults_off = faults_in_a_fresh_process(
            "se_timm", ATTNKERNELS_CPU_OUTPUT_CACHE_MB=limit, ATTNKERNELS_HUGE_PAGES="0")
        assert faults_off > faults + 2 * pages * 3 // 4, (limit, faults_off, faults)

def test_the_profiler_sees_the_outputs():
    """Memory the pool hands out is reported to the profiler as allocated (the
    benchmarks' peak memory, bench/timing.py), and as freed when the tensor dies."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(LARGE)
    module = FLAVOURS["se_timm"](LARGE[1])
    module.backend = "cpu"
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        y = module(x)
        del y
    sizes = [e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    assert x.nbytes in sizes and -x.nbytes in sizes, sizes
