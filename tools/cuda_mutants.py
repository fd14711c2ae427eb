"""Mutation check of the emulated CUDA tests: does the suite catch a bug put
into a CUDA kernel?

    python tools/cuda_mutants.py [--quick] [--list] [--only ID_SUBSTRING ...]

Applies, one at a time, mutations to a copy of csrc/ (the CUDA kernels in
csrc/cuda/ and their helpers in csrc/common/cuda_utils.cuh):
  barrier  each __syncthreads() removed in turn;
  shuffle  each shuffle's offset halved;
  tail     each loop bound `i < n` made `i < n - 1` (the last round skipped);
  over     each loop bound `i < n` made `i <= n` (one round past the end);
  halving  each `o > 0` of a halving loop made `o > 1` (the last step skipped);
  block    each blockIdx.x read as blockIdx.y;
  ceil     the launch geometry's ceil_div rounding down instead of up;
rebuilds the emulated kernels incrementally (tools/build_emulated.py: only the
translation units that include the mutated file) and runs the emulated tests of
the families that file serves (tests/test_tiles.py and the family's parity
file, stopping at the first failure). A mutant is caught when a test fails; one
that does not compile is reported apart (a mutation that is not C++). A mutant
that survives is a missing test, or an equivalent mutation listed in
EQUIVALENT below with the reason.

--quick runs one mutant of each kind (CI), in a .cu file where the kind has
one; the full list runs on demand
(about a minute a mutant on 2 cores). The unmutated tests run first unless
--baseline-ran says they passed at --seed already (tools/check_cuda_emulated.sh:
its parity run, seed 1, minutes before). Prints one line a mutant, then
"mutants: M/M caught" (equivalent ones not counted); exits 1 when a
non-equivalent mutant survives."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTATED = ["csrc/common/cuda_utils.cuh"] + sorted(
    f"csrc/cuda/{n}" for n in os.listdir(os.path.join(ROOT, "csrc", "cuda"))
    if n.endswith((".cu", ".cuh")) and n != "device.cuh")
# which families' tests exercise a source file: a family's kernels are csrc/cuda/<family>.cu
ALL_FAMILIES = sorted(n[:-len(".cu")] for n in os.listdir(os.path.join(ROOT, "csrc", "cuda"))
                      if n.endswith(".cu"))
FAMILIES = {f"{f}.cu": [f] for f in ALL_FAMILIES}
FAMILIES["cuda_utils.cuh"] = ALL_FAMILIES
for _header in os.listdir(os.path.join(ROOT, "csrc", "cuda")):
    if _header.endswith(".cuh") and _header != "device.cuh":
        FAMILIES[_header] = [  # the families whose kernels include it
            f for f in ALL_FAMILIES
            if f'"{_header}"' in open(os.path.join(ROOT, "csrc", "cuda", f"{f}.cu")).read()]
SELECTION = "not triton and not cuda and not thread_count and not opcheck"

# Mutations that cannot change any result, by (file, kind, the source line
# stripped): the reason is beside each.
_NEXT_ARRAY = ("the extra element lands in the next array carved from the dynamic shared "
               "memory, which is written before it is read; the extra read is past `pooled` "
               "(compute-sanitizer's memcheck sees such reads on a GPU, the emulator cannot)")
EQUIVALENT = {
    ("csrc/cuda/cbam.cu", "barrier", "__syncthreads();  // scratch may still be read from a "
     "previous call"): "block_tie runs once per kernel, on a scratch array of its own",
    ("csrc/cuda/se.cu", "over", "for (int64_t c = threadIdx.x; c < w.C; c += blockDim.x) s[c] = "
     "pooled[n * w.C + c];"): _NEXT_ARRAY,
    ("csrc/cuda/se.cu", "over", "for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s[c] = "
     "pooled[n * C + c];"): _NEXT_ARRAY,
    ("csrc/cuda/se.cu", "over", "for (int64_t r = threadIdx.x; r < w.R; r += blockDim.x) a[r] = "
     "activation_forward(a[r], w.act);"): _NEXT_ARRAY.split(";")[0],
    ("csrc/cuda/se.cu", "over", "for (int64_t r = threadIdx.x; r < R; r += blockDim.x) a[r] = "
     "activation_forward(h[r], w.act);"): _NEXT_ARRAY.split(";")[0],
    ("csrc/cuda/se.cu", "over", "for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {  // ds = "
     "W1^T dh, into s"): "s[C] is h[0], which nothing reads any more; the extra reads of w1 "
                         "stay in it but for the last row's (reads: see _NEXT_ARRAY)",
}


@dataclass
class Mutant:
    path: str      # relative to the root
    lineno: int    # 1-based
    kind: str
    before: str    # the line
    after: str     # the mutated line

    @property
    def ident(self):
        return f"{self.path}:{self.lineno}:{self.kind}"

    @property
    def key(self):
        return (self.path, self.kind, self.before.strip())


def _mutations(line: str):
    """(kind, mutated line) for every mutation of one source line."""
    code = line.split("//")[0]
    if "__syncthreads();" in code:
        yield "barrier", line.replace("__syncthreads();", "", 1)
    for m in re.finditer(r"__shfl_down_sync\(([^,]+),\s*([^,]+),\s*([^)]+)\)", code):
        yield "shuffle", line.replace(m.group(0), f"__shfl_down_sync({m.group(1)}, {m.group(2)}, "
                                                  f"({m.group(3)}) / 2)", 1)
    loop = re.search(r"for \(([^;]*);\s*([^;<>]+?) < ([^;]+);", code)
    if loop:
        cond = f"{loop.group(2)} < {loop.group(3)};"
        yield "tail", line.replace(cond, f"{loop.group(2)} < ({loop.group(3)}) - 1;", 1)
        yield "over", line.replace(cond, f"{loop.group(2)} <= {loop.group(3)};", 1)
    if re.search(r"for \([^;]*;\s*(\w+) > 0;\s*\1 /= 2\)", code):
        yield "halving", re.sub(r"(\w+) > 0;", r"\1 > 1;", line, count=1)
    for m in re.finditer(r"blockIdx\.x", code):
        yield "block", line[:m.start()] + "blockIdx.y" + line[m.end():]
    if "inline unsigned int ceil_div" in code:
        yield "ceil", line.replace("(a + b - 1) / b", "a / b", 1)


def mutants(root: str = ROOT):
    out = []
    for rel in MUTATED:
        with open(os.path.join(root, rel)) as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            for kind, after in _mutations(line):
                assert after != line, (rel, i, kind)
                out.append(Mutant(rel, i + 1, kind, line, after))
    return out


def quick(all_mutants):
    """One mutant of each kind, the middle one of its list (a fixed choice),
    taken from a kernel file (.cu) where the kind has one: a mutated header is
    rebuilt into every translation unit that includes it (90 s against 30 s)."""
    by_kind = {}
    for m in all_mutants:
        if m.key not in EQUIVALENT:
            by_kind.setdefault(m.kind, []).append(m)
    chosen = []
    for _, ms in sorted(by_kind.items()):
        ms = [m for m in ms if m.path.endswith(".cu")] or ms
        chosen.append(ms[len(ms) // 2])
    return chosen


def _build(tree: str, build_dir: str):
    return subprocess.run([sys.executable, os.path.join(tree, "tools", "build_emulated.py"),
                           "--root", tree, "--build-dir", build_dir],
                          capture_output=True, text=True, timeout=1800)


def _tests(tree: str, library: str, families, seed: int, timeout: int):
    env = {**os.environ, "ATTNKERNELS_EXTENSION": library, "ATTNKERNELS_SIMT_SEED": str(seed)}
    files = [f"test_{f}.py" for f in families]
    family_k = " or ".join(f"{f}_" for f in families)
    # test_tiles: this family's flavours only (the ids name them, e.g. "se_timm")
    args = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
            "test_tiles.py", *files, "-k", f"({SELECTION}) and (not test_tile_edges or "
                                           f"{family_k})"]
    try:
        return subprocess.run(args, cwd=os.path.join(tree, "tests"), env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None  # a hang: caught (the emulator reports deadlocks, so rare)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one mutant of each kind")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", nargs="*", default=None, help="mutants whose id contains one")
    parser.add_argument("--work", default=None, help="the scratch tree (kept: faster reruns)")
    parser.add_argument("--seed", type=int, default=3, help="the emulator's schedule")
    parser.add_argument("--timeout", type=int, default=600, help="seconds of tests a mutant")
    parser.add_argument("--baseline-ran", action="store_true",
                        help="the unmutated sources passed these tests at --seed already "
                             "(tests/test_cuda_emulated.py's parity run): do not rerun them")
    args = parser.parse_args(argv)

    chosen = mutants()
    if args.quick:
        chosen = quick(chosen)
    if args.only is not None:
        chosen = [m for m in chosen if any(s in m.ident for s in args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.ident}: {m.after.strip()}" + ("  [equivalent]" if m.key in EQUIVALENT
                                                      else ""))
        return 0

    work = args.work or tempfile.mkdtemp(prefix="attnkernels-mutants-")
    tree, build_dir = os.path.join(work, "tree"), os.path.join(work, "build")
    for part in ("csrc", "tools", "tests", "attnkernels"):  # the package: tests import it
        src, dst = os.path.join(ROOT, part), os.path.join(tree, part)
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    library = os.path.join(build_dir, "attnkernels_emulated.so")
    # tests import the installed attnkernels, or this tree's copy (no _C: the
    # extension comes from ATTNKERNELS_EXTENSION)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [p for p in (os.environ.get("PYTHONPATH"), tree) if p])
    out = _build(tree, build_dir)
    if out.returncode != 0:
        sys.exit("the unmutated emulated build failed:\n" + out.stderr[-4000:])
    baseline = None if args.baseline_ran else _tests(tree, library, ALL_FAMILIES, args.seed, 1800)
    if not args.baseline_ran and (baseline is None or baseline.returncode != 0):
        sys.exit("the unmutated emulated tests fail:\n" + (baseline.stdout[-4000:] if baseline
                                                           else "timeout"))

    caught = survived = stillborn = equivalent = 0
    survivors = []
    for m in chosen:
        path = os.path.join(tree, m.path)
        with open(path) as f:
            original = f.read()
        lines = original.split("\n")
        assert lines[m.lineno - 1] == m.before
        lines[m.lineno - 1] = m.after
        start = time.monotonic()
        try:
            with open(path, "w") as f:
                f.write("\n".join(lines))
            built = _build(tree, build_dir)
            if built.returncode != 0:
                verdict = "does not compile"
                stillborn += 1
            else:
                families = FAMILIES[os.path.basename(m.path)]
                ran = _tests(tree, library, families, args.seed, args.timeout)
                if ran is None or ran.returncode != 0:
                    last = ("timeout" if ran is None
                            else (ran.stdout.strip().splitlines() or [""])[-1])
                    verdict = f"caught ({last.strip('= ')})"
                    caught += 1
                elif m.key in EQUIVALENT:
                    verdict = f"survived, equivalent: {EQUIVALENT[m.key]}"
                    equivalent += 1
                else:
                    verdict = "SURVIVED"
                    survived += 1
                    survivors.append(m)
        finally:
            with open(path, "w") as f:
                f.write(original)
        print(f"{m.ident} [{time.monotonic() - start:.0f} s] {m.after.strip()}\n    {verdict}",
              flush=True)
    _build(tree, build_dir)  # leave the scratch build unmutated
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    for m in survivors:
        print(f"survivor: {m.ident}: {m.before.strip()}  ->  {m.after.strip()}")
    counted = caught + survived
    print(f"mutants: {caught}/{counted} caught" + (f", {equivalent} equivalent" if equivalent
                                                   else "")
          + (f", {stillborn} not compiling" if stillborn else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
