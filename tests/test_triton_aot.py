"""Every Triton kernel compiles for sm_80 and sm_90 without a GPU, without spills.

The interpreter runs Triton kernels on the CPU, but it accepts programs the real
compiler rejects (unsupported layouts, shared-memory overflow, dtype rules).
Here every family's modules run forward and backward on the Triton backend in
the interpreter, each kernel launch's specialisation (argument types and
constexpr values) is recorded, and tools/triton_aot.py compiles each distinct
one through Triton's whole pipeline down to a cubin for both targets, in a
process without the interpreter. On a GPU the kernels are compiled for real by
the other tests, and this one skips."""
import inspect
import json
import os
import subprocess
import sys

import pytest
import torch

from utils import FLAVOURS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1" and not torch.cuda.is_available()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not INTERPRETER, reason="records launches in the Triton interpreter (no GPU here)")]

TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                torch.float64: "fp64", torch.int32: "i32", torch.int64: "i64", torch.int8: "i8",
                torch.uint8: "u8", torch.bool: "i1"}


def _argument_type(value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + TRITON_TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"  # what the JIT makes of a Python float
    raise TypeError(f"no Triton type for {type(value).__name__}")


def _is_constexpr(parameter: inspect.Parameter) -> bool:
    return "constexpr" in str(getattr(parameter.annotation, "__name__", parameter.annotation))


def record_launches(run) -> list:
    """The distinct kernel specialisations that ``run()`` launches."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    seen = {}
    original = InterpretedFunction.run

    def recording(self, *args, grid, warmup, **kwargs):
        params = inspect.signature(self.fn).parameters
        bound = inspect.signature(self.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        signature, constexprs = {}, {}
        for name, value in bound.arguments.items():
            if _is_constexpr(params[name]) or value is None:
                signature[name] = "constexpr"
                value = value.value if hasattr(value, "value") else value
                if isinstance(value, tl.dtype):  # an accumulate type (ACC=tl.float32)
                    value = {"tl.dtype": value.name}
                constexprs[name] = value
            else:
                signature[name] = _argument_type(value)
        spec = {"module": self.fn.__module__, "kernel": self.fn.__name__,
                "signature": signature, "constexprs": constexprs}
        seen.setdefault(json.dumps(spec, sort_keys=True), spec)
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording
    try:
        run()
    finally:
        InterpretedFunction.run = original
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
