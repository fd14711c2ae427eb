"""Compiles Triton kernels ahead of time for CUDA targets, with no GPU and no driver.

    python tools/triton_aot.py SPECS.json [--targets 80 90] [--out REPORT.json] [--jobs N]

SPECS.json lists kernel specialisations as tests/test_triton_aot.py records
them from real launches: {"module", "kernel", "signature": {arg: type},
"constexprs": {arg: value, or {"tl.dtype": name} for a Triton dtype}}. Each is compiled for every target through
Triton's full pipeline (TTIR, TTGIR, LLVM IR, PTX, cubin with ptxas), so a
lowering error, an unsupported layout or a shared-memory overflow that the
interpreter accepts fails here. Registers, spills and stack come from
``ptxas -v`` (the ptxas Triton's wheel ships), shared memory from Triton. Prints one line per kernel and target; exit 1 on any failure or
any spill (float64 kernels may spill up to 16 bytes: the slow path of ptxas's
float64 division subroutine). Must run without TRITON_INTERPRET (the kernels must be JIT functions)."""
import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile


def _ptxas() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def resource_usage(ptx: str, capability: int) -> dict:
    """registers, spill stores and loads (bytes), stack frame (bytes) of the one
    kernel in ``ptx``, from ``ptxas -v`` (Triton's own ptxas)."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        arch = f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"
        log = subprocess.run([_ptxas(), "-v", f"--gpu-name={arch}", src, "-o",
                              os.path.join(d, "k.cubin")],
                             capture_output=True, text=True, check=True).stderr
    def number(pattern):
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0
    return {"registers": number(r"Used (\d+) registers"),
            "spill_stores": number(r"(\d+) bytes spill stores"),
            "spill_loads": number(r"(\d+) bytes spill loads"),
            "stack": number(r"(\d+) bytes stack frame")}


def compile_spec(spec: dict, capability: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import triton.language as tl

    fn = getattr(importlib.import_module(spec["module"]), spec["kernel"])
    constexprs = {k: tl.dtype(v["tl.dtype"]) if isinstance(v, dict) else v
                  for k, v in spec["constexprs"].items()}
    # a tuple argument's types (JSON made the tuple a list): Triton wants a tuple
    signature = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["signature"].items()}
    kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                            target=GPUTarget("cuda", capability, 32))
    return {**resource_usage(kernel.asm["ptx"], capability), "shared": kernel.metadata.shared}


def _compile_row(job) -> dict:
    """One (spec, target)'s report row: its resources, or the error that stopped it."""
    spec, cc = job
    row = {**spec, "target": f"sm_{cc}"}
    try:
        row.update(compile_spec(spec, cc))
        row["error"] = None
    except Exception as e:  # noqa: BLE001  (every lowering error is a finding)
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs")
    parser.add_argument("--targets", nargs="*", type=int, default=[80, 90])
    parser.add_argument("--out", default=None)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="compiler processes (LLVM and ptxas use one core each)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    with open(args.specs) as f:
        specs = json.load(f)
    jobs = [(spec, cc) for spec in specs for cc in args.targets]
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(_compile_row, jobs))
    else:
        rows = [_compile_row(job) for job in jobs]
    failures = 0
    for row in rows:  # a row is its spec plus the target and the results
        spec = row
        consts = ",".join(f"{k}={v}" for k, v in sorted(spec["constexprs"].items()))
        types = ",".join(t if isinstance(t, str) else "(" + ",".join(t) + ")"
                         for t in spec["signature"].values() if t != "constexpr")
        # float64 division is a ptxas subroutine whose call frame spills a few
        # bytes on its slow path; float64 runs are for checking, not speed.
        allowed = 16 if "*fp64" in json.dumps(spec["signature"]) else 0
        spilled = row["error"] is None and max(row["spill_stores"], row["spill_loads"]) > allowed
        failures += bool(row["error"] or spilled)
        status = (row["error"] if row["error"] else
                  f"{row['registers']} registers, {row['spill_stores']}/{row['spill_loads']} B "
                  f"spilled/reloaded, {row['stack']} B stack, {row['shared']} B shared"
                  + ("  SPILLS" if spilled else ""))
        print(f"{row['target']} {spec['kernel']}({types}; {consts}): {status}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"triton aot: {len(specs)} specialisations x {len(args.targets)} targets, "
          f"{failures} failed or spilled")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
