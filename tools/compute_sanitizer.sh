#!/usr/bin/env bash
# The CUDA kernels under NVIDIA compute-sanitizer (memcheck, racecheck,
# synccheck, initcheck) on small shapes: the CUDA-backend cases of the
# determinism tests (every flavour, forward and backward, 2x8x5x6) and of
# test_op_outputs. Run it on a machine with a GPU, with the package installed
# with its CUDA kernels (`pip install .`), whenever one is available, and
# commit the logs it writes.
#
#   bash tools/compute_sanitizer.sh [pytest -k expression, default "cuda-cuda"]
#
# Environment: COMPUTE_SANITIZER (default: on PATH, else $CUDA_HOME/bin),
# OUT_DIR (default bench/results/compute-sanitizer-<date>), TOOLS (default
# "memcheck racecheck synccheck initcheck"), PARALLEL=1 (the tools side by
# side, one process each), PYTHON (default python3). PyTorch's caching allocator is
# turned off (PYTORCH_NO_CUDA_MEMORY_CACHING=1), so that memcheck and initcheck
# see every tensor as its own allocation. Exit status: 0 when every tool ran
# clean, 1 when one reported errors or its tests failed, 2 when it cannot run.
set -uo pipefail
cd "$(dirname "$0")/.."

sanitizer=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || true)}
sanitizer=${sanitizer:-${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer}
if [ ! -x "$sanitizer" ]; then
  echo "compute-sanitizer not found (set COMPUTE_SANITIZER or CUDA_HOME)" >&2
  exit 2
fi
py=${PYTHON:-python3}
"$py" - <<'PY' || exit 2
import sys, torch, attnkernels
if not torch.cuda.is_available():
    sys.exit("no CUDA device")
why = attnkernels.available_backends()["cuda"]
if why:
    sys.exit(f"the cuda backend cannot run: {why}")
PY

select=${1:-cuda-cuda}
out=${OUT_DIR:-bench/results/compute-sanitizer-$(date +%F)}
mkdir -p "$out"
summary="$out/summary.txt"
{
  echo "date: $(date -Is)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "device: $("$py" -c 'import torch; print(torch.cuda.get_device_name())')"
  echo "torch: $("$py" -c 'import torch; print(torch.__version__, torch.version.cuda)')"
  echo "sanitizer: $("$sanitizer" --version | tail -1)"
  echo "tests: -k '$select' tests/test_determinism.py tests/test_op_outputs.py"
} > "$summary"

run_tool() {  # one tool over the selected tests; its line goes to the summary
  local tool=$1 log="$out/$1.log"
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool "$tool" --error-exitcode 1 \
    --target-processes all --log-file "$log.sanitizer" \
    "$py" -m pytest -q -p no:cacheprovider -k "$select" \
    tests/test_determinism.py tests/test_op_outputs.py > "$log" 2>&1
  local rc=$?
  cat "$log.sanitizer" >> "$log" 2>/dev/null && rm -f "$log.sanitizer"
  local errors; errors=$(grep -Eo "ERROR SUMMARY: [0-9]+ error" "$log" | tail -1)
  echo "$tool: exit $rc, ${errors:-no error summary}; $(grep -E '[0-9]+ (passed|failed)' "$log" | tail -1)" \
    | tee -a "$summary"
  return $rc
}

status=0
if [ "${PARALLEL:-0}" = 1 ]; then  # one process per tool, side by side
  pids=()
  for tool in ${TOOLS:-memcheck racecheck synccheck initcheck}; do
    run_tool "$tool" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
else
  for tool in ${TOOLS:-memcheck racecheck synccheck initcheck}; do
    run_tool "$tool" || status=1
  done
fi
exit $status
