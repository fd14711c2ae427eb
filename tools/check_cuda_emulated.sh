#!/usr/bin/env bash
# The CUDA kernels verified without a GPU, in one command:
#   1. tests/test_cuda_emulated.py: builds csrc/cuda/ for the CPU SIMT emulator
#      (tools/build_emulated.py), runs the families' parity matrix and the
#      tile-edge shapes on it against the float64 reference, checks that every
#      __global__ kernel was launched and that two schedules give the same bits;
#   2. tools/cuda_mutants.py: bugs put into the kernels one at a time (barriers
#      removed, shuffle offsets halved, loop bounds off by one, ...) must each
#      fail those tests (--quick: one of each kind; MUTANTS=all: every one);
#   3. tools/cuda_resources.py: registers, spills and shared memory of every
#      kernel for sm_80 and sm_90 against the launchers' limits, read from the
#      extension this checkout imports when it holds CUDA kernels for both and
#      is newer than csrc/ (CI's editable install: no second nvcc build), else
#      compiled by nvcc (--compile).
# Last line: "emulated: K/K kernels launched, P tests passed, M/M mutants caught,
# S spills". Run from a checkout; uses the tree's Python package (PYTHONPATH),
# whatever is installed. PYTHON picks the interpreter (default: python).
#   bash tools/check_cuda_emulated.sh
#   MUTANTS=all bash tools/check_cuda_emulated.sh      # the full mutation list (~1 h)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PYTHON=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export ATTNKERNELS_EMULATED=1 ATTNKERNELS_EMULATED_SUMMARY="$work/summary"
export ATTNKERNELS_EMULATED_BUILD_DIR="$work/build"

echo "== 1. the emulated CUDA suite"
(cd tests && "$PYTHON" -m pytest -q -p no:cacheprovider test_cuda_emulated.py)
launched=$(sed -n 's/^launched //p' "$work/summary")
passed=$(sed -n 's/^passed //p' "$work/summary")

echo "== 2. mutants"
# seed 1: step 1's parity run passed the unmutated sources at that schedule
mutant_args=(--seed 1 --baseline-ran --quick)
[[ "${MUTANTS:-quick}" == all ]] && mutant_args=(--seed 1 --baseline-ran)
"$PYTHON" tools/cuda_mutants.py "${mutant_args[@]}" | tee "$work/mutants"
mutants=$(sed -n 's/^mutants: \([0-9]*\/[0-9]*\) caught.*/\1/p' "$work/mutants")

echo "== 3. registers, spills, shared memory (sm_80 and sm_90)"
# the checkout's own build (attnkernels/_C*.so), if it holds CUDA kernels for
# both and is newer than every csrc/ file (else it may not be these sources)
library=$("$PYTHON" - <<'PY' 2>/dev/null || true
import glob, importlib.util, os, subprocess, sys
sys.path.insert(0, "tools")
import cuda_resources
spec = importlib.util.find_spec("attnkernels._C")
if spec and spec.origin:
    built = os.path.getmtime(spec.origin)
    sources = glob.glob("csrc/**/*", recursive=True)
    out = subprocess.run([cuda_resources.cuobjdump(), "--list-elf", spec.origin],
                         capture_output=True, text=True)
    if all(os.path.getmtime(f) < built for f in sources) \
            and "sm_80" in out.stdout and "sm_90" in out.stdout:
        print(spec.origin)
PY
)
if [[ -n "$library" ]]; then
  echo "(reading $library)"
  resources_args=("$library")
else
  resources_args=(--compile)
fi
"$PYTHON" tools/cuda_resources.py "${resources_args[@]}" 2>&1 | grep -v "No CUDA runtime is found" \
    | tee "$work/resources"
spills=$(sed -n 's/^resources: .*, \([0-9]*\) spilling.*/\1/p' "$work/resources")

echo "emulated: $launched kernels launched, $passed tests passed," \
     "$mutants mutants caught, $spills spills"
