"""The CUDA kernels, run on the CPU through the SIMT emulator (csrc/cuda/simt.h).

tools/build_emulated.py compiles csrc/cuda/*.cu with the host compiler into a
library whose CPU dispatch key runs the CUDA kernels' code, one fiber per CUDA
thread under a randomised scheduler. A pytest process that loads it
(ATTNKERNELS_EXTENSION) runs the families' parity tests on the "cpu" backend,
so the same float64-oracle matrix that checks the C++ kernels checks the CUDA
kernels, launch geometry included. Then: every __global__ kernel in csrc/cuda/
was launched, and two scheduler seeds give bitwise-equal outputs and gradients.
What the emulator cannot show (timing, coalescing, real warp scheduling) stays
with tools/gpu_proof.sh on a GPU. tools/check_cuda_emulated.sh runs this with
the mutation check (tools/cuda_mutants.py) and the resource check."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from attnkernels.families import FAMILIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
# On by default (the README's test command runs it: about 1 minute to build, 2
# to test on 2 cores); ATTNKERNELS_EMULATED=0 skips it.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("ATTNKERNELS_EMULATED") == "0",
                                 reason="ATTNKERNELS_EMULATED=0"),
              pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                 reason="needs a host C++ compiler")]

# The families' parity, gradcheck, tie, NaN, zero-size, determinism and op-output
# tests, and the tile-edge shapes, on the "cpu" backend (here: the CUDA kernels,
# emulated), every dtype.
PARITY_FILES = ([f"test_{f.name}.py" for f in FAMILIES]
                + ["test_op_outputs.py", "test_tiles.py"])
PARITY_SELECTION = os.environ.get("ATTNKERNELS_EMULATED_SELECTION",
                                  "not triton and not cuda and not thread_count")


def _sources_kernels():
    """Every __global__ kernel declared in csrc/cuda/, as "file:name" (scanned,
    not listed by hand; three files have an elementwise_kernel)."""
    names = set()
    for name in os.listdir(os.path.join(ROOT, "csrc", "cuda")):
        if name.endswith((".cu", ".cuh")):
            with open(os.path.join(ROOT, "csrc", "cuda", name)) as f:
                names |= {f"{name}:{k}" for k in re.findall(r"__global__\s+void\s+(\w+)", f.read())}
    return names


def _summary(line: str):
    """A line for tools/check_cuda_emulated.sh's report (ATTNKERNELS_EMULATED_SUMMARY)."""
    path = os.environ.get("ATTNKERNELS_EMULATED_SUMMARY")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@pytest.fixture(scope="module")
def emulated_library(tmp_path_factory):
    build_dir = os.environ.get("ATTNKERNELS_EMULATED_BUILD_DIR") or str(
        tmp_path_factory.mktemp("emulated-build"))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_emulated.py"),
                          "--build-dir", build_dir], capture_output=True, text=True, timeout=2400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout.strip().splitlines()[-1]


def _pytest(library, args, seed, launched=None, timeout=2400):
    env = {**os.environ, "ATTNKERNELS_EXTENSION": library, "ATTNKERNELS_SIMT_SEED": str(seed)}
    if launched:
        env["ATTNKERNELS_SIMT_LAUNCHED"] = str(launched)
    workers = ["-n", "auto"] if importlib.util.find_spec("xdist") else []
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                           *workers, *args], cwd=TESTS, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cuda_kernels_match_the_float64_reference_and_every_kernel_runs(emulated_library, tmp_path):
    launched = tmp_path / "launched.txt"
    out = _pytest(emulated_library, [*PARITY_FILES, "-k", PARITY_SELECTION], seed=1,
                  launched=launched)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", last)
    # "1 xfailed" is a pass; "1 failed" or "1 error" is not
    assert passed and not re.search(r"\b\d+ (failed|errors?)\b", last), out.stdout[-2000:]
    # a launch is recorded as "<path of the launching file>:kernel<template arguments>"
    ran = {os.path.basename(line.split("<")[0].strip()) for line in
           launched.read_text().splitlines()}
    kernels = _sources_kernels()
    missing = kernels - ran
    _summary(f"launched {len(kernels & ran)}/{len(kernels)}")
    _summary(f"passed {passed.group(1)}")
    assert not missing, f"CUDA kernels never launched under the emulator: {sorted(missing)}"


DIGEST_SCRIPT = ("import sys; sys.path.insert(0, {tests!r}); import utils; "
                 "print(utils.flavours_digest())")


def test_cuda_kernels_are_bitwise_deterministic_under_any_schedule(emulated_library):
    """Fixed-order reductions: another thread interleaving, another block order
    (two scheduler seeds), the same bits, for every flavour forward and backward."""
    digests = []
    for seed in (11, 12):
        env = {**os.environ, "ATTNKERNELS_EXTENSION": emulated_library,
               "ATTNKERNELS_SIMT_SEED": str(seed)}
        out = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT.format(tests=TESTS)],
                             env=env, capture_output=True, text=True, timeout=1200, cwd=TESTS)
        assert out.returncode == 0, out.stderr[-4000:]
        digests.append(out.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1]
