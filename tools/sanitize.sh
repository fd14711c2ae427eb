#!/usr/bin/env bash
# The C++ CPU kernels under AddressSanitizer and UndefinedBehaviorSanitizer:
# builds attnkernels with ATTNKERNELS_SANITIZE=address,undefined (CPU only;
# gate_matmul through at::cpu::mm_out, its path for a torch without BLAS)
# in a scratch copy of the tree, against the active environment's torch, then
# runs the CPU tests of a small subset on that copy (PYTHONPATH; the installed
# package is left alone) with the sanitizer runtimes preloaded (python itself
# is not instrumented). Any report aborts the run. Extra arguments go to pytest.
#   bash tools/sanitize.sh                 # as CI runs it
#   bash tools/sanitize.sh -k coord        # narrower
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -r setup.py pyproject.toml README.md csrc attnkernels "$build/"
rm -f "$build"/attnkernels/_C*.so
(cd "$build" && ATTNKERNELS_SANITIZE=address,undefined ATTNKERNELS_CUDA=0 \
    python setup.py -q build_ext --inplace > "$build/build.log" 2>&1) \
  || { tail -40 "$build/build.log"; exit 1; }
export PYTHONPATH=$build${PYTHONPATH:+:$PYTHONPATH}
LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
export LD_PRELOAD
# Python and torch keep allocations alive on purpose: no leak report.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:print_summary=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$root/tests"  # not the root: its attnkernels/ would come first
# the sanitized copy is the one imported, not an installed or in-place build
python -c "import sys, attnkernels._C as c
sys.exit(0 if c.__file__.startswith('$build/') and c.sanitize else 'imported ' + c.__file__)"
python -m pytest -q -p no:cacheprovider -x -k "not triton" \
    test_extremes.py test_fuzz.py test_gate_conv.py test_gate_matmul.py test_determinism.py "$@"
