#!/usr/bin/env bash
# The GPU proof: one prepared run on a machine with a GPU (H100/H200), inside
# about 9 minutes, that builds (or loads a carried build), runs the tests on the
# CUDA and Triton backends, compute-sanitizer and the benchmarks, and writes
# every log and result under one folder with a summary ending in a PASS/FAIL line.
#
#   bash tools/gpu_proof.sh [--dry-run] [--out DIR]
#
# Phases, each time-boxed (seconds; environment variables), so a slow one
# cannot starve the rest:
#   info     versions, nvidia-smi, the device                                 -
#   build    a carried attnkernels/_C*.so that loads against this torch and   GPU_PROOF_BUILD_S=240
#            registers CUDA kernels is used as is; otherwise an in-place
#            build for this GPU's architecture alone with every core
#   tests    pytest on the CUDA and Triton backends (the test ids naming      GPU_PROOF_TESTS_S=270
#            cuda or triton), pytest-xdist when present, alongside
#            compute-sanitizer (its 4 tools in parallel)
#   bench    python -m bench --quick (64x256x56x56 bf16), then every shape     GPU_PROOF_BENCH_S=130
#   large    the >2^31-element cases on the GPU (tests/test_large.py)         GPU_PROOF_LARGE_S=45
#   models   python -m bench.models --quick, bf16; python -m bench.attention   GPU_PROOF_MODELS_S=60
#            (the YOLO attention shapes on both paths: pick_path's evidence), then
#            --set seeds (DANet, self-attention, CoT, GAM, PAM/CAM training steps)
#   rest     the other tests (CPU backend, API) under this torch               GPU_PROOF_REST_S=0
# GPU_PROOF_PHASES (default "info build tests bench large models rest") picks
# phases. --dry-run (no GPU needed; CI runs it) resolves every phase's command,
# checks its inputs exist and prints the plan without running it.
#
# Output: DIR (default /tmp/gpu-proof when $OUT is set, else bench/results/gpu-proof-<date>) holds
# info.txt, build.log, tests.log, tests-rest.log, large.log, sanitizer/,
# bench/ (CSV, JSON, PNG), models/ and summary.txt; where $OUT is set (the
# device tool) everything is also packed into $OUT/gpu-proof.tgz. Exit 0 when
# every phase that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

dry=0
out=${OUT:+/tmp/gpu-proof}  # the device tool brings back 8 files: results are packed
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry=1 ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--dry-run] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
out=${out:-bench/results/gpu-proof-$(date +%F)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
phases=${GPU_PROOF_PHASES:-info build tests bench large models rest}
summary=$out/summary.txt
: > "$summary"
failed=()
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}  # the in-place build (or the carried one)
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
start=$(date +%s)

say() { echo "$*" | tee -a "$summary"; }
wants() { [[ " $phases " == *" $1 "* ]]; }
# phase NAME SECONDS LOG CMD...: runs CMD with a time box, logs it, records the status
phase() {
  local name=$1 budget=$2 log=$3; shift 3
  if [ "$dry" = 1 ]; then
    say "[dry-run] $name (${budget}s): $*"
    return 0
  fi
  local t0=$(date +%s)
  timeout -k 15 "$budget" "$@" > "$log" 2>&1
  local rc=$? t=$(( $(date +%s) - t0 ))
  local tail; tail=$(grep -E "[0-9]+ (passed|failed|error)" "$log" | tail -1)
  if [ -z "$tail" ] && [ -s "$log" ]; then  # killed before pytest's last line: count -v's
    tail="so far: $(grep -c " PASSED " "$log") passed, $(grep -c " FAILED " "$log") failed"
    tail="$tail; failed: $(grep " FAILED " "$log" | sed 's/.*FAILED //' | head -20 | tr '\n' ' ')"
  fi
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    say "$name: TIMEOUT after ${t}s (box ${budget}s) ${tail}"
    failed+=("$name")
  elif [ $rc -ne 0 ]; then
    say "$name: FAIL (exit $rc, ${t}s) ${tail}"
    failed+=("$name")
  else
    say "$name: ok (${t}s) ${tail}"
  fi
  return $rc
}

# ---- info
if wants info; then
  {
    echo "date: $(date -Is)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo "${ATTNKERNELS_COMMIT:-unknown}")"
    echo "host: $(uname -srm), $(nproc) cores"
    if [ "$dry" = 0 ]; then
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
        --format=csv 2>&1
      "$py" - <<'PY' 2>&1
import platform, torch
print("python:", platform.python_version(), "| torch:", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton; print("triton:", triton.__version__)
except ImportError as e:
    print("triton: missing", e)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.0f} GiB")
PY
      echo "nvcc: $(nvcc --version 2>&1 | tail -1)"
      echo "compute-sanitizer: $(compute-sanitizer --version 2>&1 | tail -1)"
      echo; nvidia-smi 2>&1
    fi
  } > "$out/info.txt" 2>&1
  head -8 "$out/info.txt" | tee -a "$summary"
fi

# ---- build (or load the carried build)
loads_with_cuda() {
  "$py" - <<'PY'
import sys, warnings
warnings.simplefilter("error")
import torch, attnkernels
from attnkernels._core import extension as _extension
sys.exit(0 if _extension.has_kernel("se_forward", "CUDA") else 1)
PY
}
if wants build; then
  if [ "$dry" = 1 ]; then
    say "[dry-run] build: use attnkernels/_C*.so if it loads with CUDA kernels, else" \
        "ATTNKERNELS_CUDA=1 TORCH_CUDA_ARCH_LIST=<device cc> MAX_JOBS=$(nproc)" \
        "$py setup.py build_ext --inplace (${GPU_PROOF_BUILD_S:-240}s)"
    ls attnkernels/_C*.so 2>/dev/null | sed 's/^/[dry-run]   carried: /' | tee -a "$summary"
  elif loads_with_cuda 2> "$out/build.log"; then
    say "build: carried build loads with CUDA kernels ($(ls attnkernels/_C*.so | tr '\n' ' '))"
  else
    arch=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
    rm -f attnkernels/_C*.so
    ATTNKERNELS_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$(nproc) \
      phase build "${GPU_PROOF_BUILD_S:-240}" "$out/build.log" \
      "$py" setup.py build_ext --inplace \
      && { loads_with_cuda >> "$out/build.log" 2>&1 || { say "build: built, but no CUDA kernels load"; failed+=(build-load); }; }
  fi
fi

# ---- tests and compute-sanitizer, side by side
xdist=()
if "$py" -c "import xdist" 2>/dev/null; then xdist=(-n "${GPU_PROOF_WORKERS:-14}"); fi
per_test=()
if "$py" -c "import pytest_timeout" 2>/dev/null; then per_test=(--timeout 180); fi
# Test ids name the backend (cuda, triton), test_fuzz's the device too.
gpu_select="cuda or triton"
serial_cmd=("$py" -m pytest -p no:cacheprovider -v -rfE "${per_test[@]}")  # -v: a killed run still shows each result
pytest_cmd=("${serial_cmd[@]}" "${xdist[@]}" tests)
if wants tests; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # xdist workers share the cores
  mkdir -p "$out/sanitizer"
  san_cmd=(env OUT_DIR="$out/sanitizer" PARALLEL=1 bash tools/compute_sanitizer.sh)
  if [ "$dry" = 1 ]; then
    say "[dry-run] sanitizer (${GPU_PROOF_TESTS_S:-270}s): ${san_cmd[*]}"
    phase tests "${GPU_PROOF_TESTS_S:-270}" /dev/null "${pytest_cmd[@]}" -m "not large_memory" \
      -k "$gpu_select"
    "$py" -m pytest tests -p no:cacheprovider -q --collect-only -m "not large_memory" \
      -k "$gpu_select" 2>&1 | tail -1 | sed 's/^/[dry-run]   here: /' | tee -a "$summary"
  else
    ( timeout -k 15 "${GPU_PROOF_TESTS_S:-270}" "${san_cmd[@]}" > "$out/sanitizer/run.log" 2>&1
      echo $? > "$out/sanitizer/rc" ) &
    san_pid=$!
    phase tests "${GPU_PROOF_TESTS_S:-270}" "$out/tests.log" "${pytest_cmd[@]}" \
      -m "not large_memory" -k "$gpu_select"
    wait $san_pid
    rc=$(cat "$out/sanitizer/rc")
    cat "$out/sanitizer/summary.txt" 2>/dev/null | grep -E "^(memcheck|racecheck|synccheck|initcheck)" \
      | sed 's/^/  sanitizer /' | tee -a "$summary"
    if [ "$rc" = 0 ]; then say "sanitizer: ok"; else say "sanitizer: FAIL (exit $rc)"; failed+=(sanitizer); fi
  fi
fi

# ---- benchmarks
if wants bench; then
  mkdir -p "$out/bench"
  export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-$(nproc)}
  phase bench "${GPU_PROOF_BENCH_S:-130}" "$out/bench/bench.log" bash -c "
    '$py' -m bench --quick --out '$out/bench' &&
    '$py' -m bench --quick --shapes resnet50-stage1 resnet50-stage3 resnet50-stage4 \
      effnet-stage1 inference-b1 --out '$out/bench/shapes'"
  if [ "$dry" = 0 ]; then
    ls "$out"/bench/*.json > /dev/null 2>&1 && "$py" -m bench.plot "$out"/bench/*.json \
      --out "$out/bench/record-b64.png" >> "$out/bench/bench.log" 2>&1
    ls "$out"/bench/shapes/*.json > /dev/null 2>&1 && "$py" -m bench.plot \
      "$out"/bench/shapes/*.json --out "$out/bench/shapes.png" >> "$out/bench/bench.log" 2>&1
    "$py" -m bench.table "$out"/bench/*.json 2>/dev/null | tee -a "$summary"
  fi
fi
if wants large; then
  phase large "${GPU_PROOF_LARGE_S:-45}" "$out/large.log" "${serial_cmd[@]}" \
    tests/test_large.py -m large_memory -k "cuda or triton"
fi

if wants models; then
  mkdir -p "$out/models"
  phase models "${GPU_PROOF_MODELS_S:-60}" "$out/models/models.log" bash -c "
    '$py' -m bench.models --quick --dtype bfloat16 --out '$out/models' &&
    '$py' -m bench.attention --batch 8 --dtype bfloat16 --budget 0.5 --out '$out/models' &&
    '$py' -m bench.attention --set seeds --cases danet self-attention cot gam gam-yolo pam-official cam-official \
      --modes train \
      --dtype bfloat16 --budget 0.5 --out '$out/models'"
fi

if wants rest && [ "${GPU_PROOF_REST_S:-0}" -gt 0 ]; then
  phase rest "$GPU_PROOF_REST_S" "$out/tests-rest.log" "${pytest_cmd[@]}" \
    -m "not large_memory" -k "not ($gpu_select)"
fi

total=$(( $(date +%s) - start ))
if [ ${#failed[@]} -eq 0 ]; then
  say "GPU PROOF: PASS (${total}s)"
else
  say "GPU PROOF: FAIL (${failed[*]}) (${total}s)"
fi
if [ "$dry" = 0 ] && [ -n "${OUT:-}" ]; then
  tar czf "$OUT/gpu-proof.tgz" -C "$out" . && cp "$summary" "$OUT/summary.txt"
fi
[ ${#failed[@]} -eq 0 ]
