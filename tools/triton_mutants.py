"""Mutation check of the Triton kernels' tiling: does the suite catch a kernel
that only covers its first tile?

    python tools/triton_mutants.py [--quick] [--list] [--only ID_SUBSTRING ...]

Applies, one at a time, to a copy of the package (the Triton kernels,
attnkernels/*/triton.py and attnkernels/_core/*triton*.py):
  loop  each tile loop of a kernel, `for x0 in range(0, N, BLOCK)`, made
        `range(0, BLOCK, BLOCK)`: the first tile only;
  grid  each launch grid's `triton.cdiv(N, block)` made 1: the first program
        only along that axis;
and runs tests/test_tiles.py's Triton tile test in the interpreter on the copy
(each family at a shape whose launches cross every tile, against float64;
stopping at the first failure), after checking that the unmutated copy passes. A mutant
is caught when a test fails. --quick runs one of each kind (CI); the whole
list takes about 10 minutes on 2 cores. Prints one line a mutant, then "triton mutants: M/M caught"; exits 1
when one survives (a tile no test crosses)."""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(os.path.relpath(p, ROOT) for p in
                 glob.glob(os.path.join(ROOT, "attnkernels", "*", "triton.py"))
                 + glob.glob(os.path.join(ROOT, "attnkernels", "_core", "*triton*.py")))
LOOP = re.compile(r"\brange\((\w+), ([\w *]+), (BLOCK\w*)\)")
GRID = re.compile(r"triton\.cdiv\([^()]*(?:\([^()]*\))?[^()]*\)")


@dataclass
class Mutant:
    path: str
    line: int
    kind: str
    before: str
    after: str

    @property
    def id(self) -> str:
        return f"{os.path.relpath(self.path, 'attnkernels')}:{self.line}:{self.kind}"


def mutants():
    out = []
    for path in SOURCES:
        with open(os.path.join(ROOT, path)) as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines, 1):
            if LOOP.search(line):
                out.append(Mutant(path, i, "loop", line,
                                  LOOP.sub(lambda m: f"range({m[1]}, {m[3]}, {m[3]})", line, 1)))
            if "](" in line or re.search(r"\w+\[\(", line):  # a launch: kernel[(grid...)](
                for m in GRID.finditer(line):
                    out.append(Mutant(path, i, "grid", line,
                                      line[:m.start()] + "1" + line[m.end():]))
    return out


def quick(all_mutants):
    seen, picked = set(), []
    for m in all_mutants:
        if m.kind not in seen:
            seen.add(m.kind)
            picked.append(m)
    return picked


def caught(mutant: Mutant, timeout: int) -> str:
    """'caught', 'SURVIVED', or why the run said nothing (a timeout)."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(ROOT, "attnkernels"), os.path.join(tmp, "attnkernels"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        target = os.path.join(tmp, mutant.path)
        with open(target) as f:
            lines = f.read().splitlines()
        assert lines[mutant.line - 1] == mutant.before
        lines[mutant.line - 1] = mutant.after
        with open(target, "w") as f:
            f.write("\n".join(lines) + "\n")
        env = {**os.environ, "PYTHONPATH": tmp, "TRITON_INTERPRET": "1",
               "ATTNKERNELS_FUZZ_SEED": "1"}
        env.pop("ATTNKERNELS_EXTENSION", None)
        selection = "triton and across_their_tiles"
        try:
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p",
                                  "no:cacheprovider", "test_tiles.py", "-k", selection],
                                 cwd=os.path.join(ROOT, "tests"), env=env, capture_output=True,
                                 text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout"
        return "caught" if run.returncode == 1 else "SURVIVED" if run.returncode == 0 else (
            f"error (pytest exit {run.returncode}): {run.stdout[-300:]}")


def _first_line(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.readline().rstrip("\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one mutant of each kind")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--only", nargs="*", default=None, help="ids containing one of these")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutant")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="test runs at once (the interpreter uses about one core)")
    args = parser.parse_args(argv)
    todo = mutants()
    if args.only:
        todo = [m for m in todo if any(s in m.id for s in args.only)]
    if args.quick:
        todo = quick(todo)
    if args.list:
        for m in todo:
            print(f"{m.id}\n  - {m.before.strip()}\n  + {m.after.strip()}")
        return 0
    # the unmutated copy runs too: a failure there is not a catch
    control = Mutant(SOURCES[0], 1, "none", *([_first_line(SOURCES[0])] * 2))
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:  # each run is its own process
        verdicts = pool.map(lambda m: caught(m, args.timeout), [control] + todo)
        control_verdict = next(verdicts)
        if control_verdict != "SURVIVED":
            print(f"the unmutated copy does not pass its tests ({control_verdict})")
            return 2
        survived = []
        for m, verdict in zip(todo, verdicts):
            print(f"{verdict:9s} {m.id}  {m.after.strip()}", flush=True)
            if verdict != "caught":
                survived.append(m)
    print(f"triton mutants: {len(todo) - len(survived)}/{len(todo)} caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
