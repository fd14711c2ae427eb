"""The CUDA kernels' resource use on every architecture the extension is built
for (sm_80 and sm_90 by default), read from the build with cuobjdump, no GPU
needed: every __global__ kernel of csrc/cuda/ present for each, none spilling
registers to local memory, none using more shared memory than its launcher
assumes (tools/cuda_resources.py says what each uses and why a limit holds)."""
import importlib.util
import os
import subprocess
import sys

import pytest

from attnkernels._core import extension as _extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not (_extension.load() and _extension.has_kernel("se_forward", "CUDA")),
                    reason="the extension was built without CUDA kernels")
def test_every_cuda_kernel_is_built_for_sm80_and_sm90_without_spills_or_excess_shared_memory():
    library = importlib.util.find_spec("attnkernels._C").origin  # the build this process loaded
    tool = os.path.join(ROOT, "tools", "cuda_resources.py")
    out = subprocess.run([sys.executable, tool, library],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("resources: ") and last.endswith(" 0 spilling, 0 problems"), last
