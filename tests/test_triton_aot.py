"""Every Triton kernel compiles for sm_80 and sm_90 without a GPU, without spills.

The interpreter runs Triton kernels on the CPU, but it accepts programs the real
compiler rejects (unsupported layouts, shared-memory overflow, dtype rules).
Here every family's modules run forward and backward on the Triton backend in
the interpreter, each kernel launch's specialisation (argument types and
constexpr values) is recorded, and tools/triton_aot.py compiles each distinct
one through Triton's whole pipeline down to a cubin for both targets, in a
process without the interpreter. On a GPU the kernels are compiled for real by
the other tests, and this one skips."""
import json
import os
import subprocess
import sys

import pytest
import torch

from flavours import FLAVOURS
from utils import record_triton_launches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1" and not torch.cuda.is_available()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not INTERPRETER, reason="records launches in the Triton interpreter (no GPU here)")]

def record_launches(run) -> list:
    """The distinct kernel specialisations that ``run()`` launches."""
    seen = {}
    for launch in record_triton_launches(run):
        seen.setdefault(json.dumps(launch["spec"], sort_keys=True), launch["spec"])
    return list(seen.values())


def _every_family_forward_and_backward():
    for name, make in sorted(FLAVOURS.items()):
        for dtype in (torch.float32, torch.float16, torch.float64):
            for fmt in (torch.contiguous_format, torch.channels_last):
                for train in (True, False):
                    torch.manual_seed(0)
                    m = make(8).to(dtype).train(train)
                    m.backend = "triton"
                    x = torch.randn(2, 8, 5, 6, dtype=dtype).to(memory_format=fmt)
                    m(x.requires_grad_()).sum().backward()


def test_every_triton_kernel_compiles_for_sm80_and_sm90(tmp_path):
    specs = record_launches(_every_family_forward_and_backward)
    # The interpreter has no bfloat16: each fp16 specialisation also compiles with bf16.
    specs += [json.loads(json.dumps(s).replace('"*fp16"', '"*bf16"')) for s in specs
              if '"*fp16"' in json.dumps(s)]
    kernels = {s["kernel"] for s in specs}
    assert len(kernels) >= 10, sorted(kernels)  # every family's kernels were reached
    path = tmp_path / "specs.json"
    path.write_text(json.dumps(specs))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the same attnkernels
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "triton_aot.py"), str(path),
                          "--out", str(tmp_path / "report.json")],
                         capture_output=True, text=True, env=env, timeout=1200)
    report = os.environ.get("ATTNKERNELS_TRITON_AOT_REPORT")
    if report:
        with open(report, "w") as f:
            f.write(out.stdout)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
