#!/usr/bin/env bash
# The C++ CPU kernels under AddressSanitizer and UndefinedBehaviorSanitizer:
# builds attnkernels with ATTNKERNELS_SANITIZE=address,undefined (CPU only;
# gate_matmul through at::cpu::mm_out, its path for a torch without BLAS)
# into the active environment, replacing the installed one, then runs the CPU
# tests of a small subset with the sanitizer runtimes preloaded (python itself
# is not instrumented). Any report aborts the run. Extra arguments go to pytest.
#   bash tools/sanitize.sh                 # as CI runs it
#   bash tools/sanitize.sh -k coord        # narrower
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q "setuptools>=64" wheel  # --no-build-isolation builds with the environment's own
ATTNKERNELS_SANITIZE=address,undefined ATTNKERNELS_CUDA=0 \
    pip install -q --no-build-isolation --no-deps --force-reinstall --ignore-installed .
LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
export LD_PRELOAD
# Python and torch keep allocations alive on purpose: no leak report.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:print_summary=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd tests  # the installed package, not the source tree
python -m pytest -q -p no:cacheprovider -x -k "not triton" \
    test_extremes.py test_fuzz.py test_gate_conv.py test_gate_matmul.py test_determinism.py "$@"
