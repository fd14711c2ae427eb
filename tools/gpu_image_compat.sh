#!/usr/bin/env bash
# The GPU machine's software on the CPU machine: builds attnkernels against
# torch 2.11.0 (+cu130) and triton 3.6.0 under Python 3.12 where one is found
# (the lent H100/H200 image), CUDA kernels for sm_90 included, in a fresh venv,
# and runs a CPU test subset there, so an API difference shows here and not on
# the GPU. The extension it builds is the one tools/gpu_proof.sh can carry:
#
#   bash tools/gpu_image_compat.sh                # as CI runs it
#   KEEP_BUILD=1 bash tools/gpu_image_compat.sh   # also leaves the stripped
#       attnkernels/_C.cpython-312-*.so in the checkout (git-ignored), to carry
#
# Environment: TORCH_VERSION (2.11.0), TRITON_VERSION (3.6.0), PYTHON (default:
# python3.12 from PATH or pyenv, else python3), CUDA_HOME (default: found by
# setup.py), ATTNKERNELS_CUDA (default 1 when nvcc is found). About 12 minutes
# on 2 cores (3 GB of wheels, a 7-minute build, the tests on both cores).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

py=${PYTHON:-}
if [ -z "$py" ]; then  # the first Python 3.12 that runs (a pyenv shim may not), else python3
  for candidate in python3.12 $(ls "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.12*/bin/python3.12 2>/dev/null) python3; do
    if "$candidate" -c "" 2>/dev/null; then py=$candidate; break; fi
  done
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$py" -m venv "$scratch/venv"
venv_py=$scratch/venv/bin/python
"$venv_py" -m pip install -q --upgrade pip
# numpy < 2.4: triton 3.6's interpreter (the Triton tests on the CPU) needs it
"$venv_py" -m pip install -q "torch==${TORCH_VERSION:-2.11.0}" "triton==${TRITON_VERSION:-3.6.0}" \
  "numpy<2.4" pytest pytest-xdist hypothesis "setuptools>=64" wheel ninja
echo "gpu image compat: $("$venv_py" -c 'import sys, torch, triton; print(
    "python", sys.version.split()[0], "| torch", torch.__version__, "| triton", triton.__version__)')"

# CUDA kernels for the GPU's architecture alone, as the GPU proof carries them
if [ -z "${ATTNKERNELS_CUDA:-}" ] && command -v nvcc > /dev/null; then export ATTNKERNELS_CUDA=1; fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
build=$scratch/src
mkdir -p "$build"
cp -r setup.py pyproject.toml README.md csrc attnkernels "$build/"
rm -f "$build"/attnkernels/_C*.so
start=$(date +%s)
(cd "$build" && "$venv_py" setup.py -q build_ext --inplace > "$scratch/build.log" 2>&1) \
  || { tail -40 "$scratch/build.log"; exit 1; }
echo "gpu image compat: built in $(( $(date +%s) - start ))s (ATTNKERNELS_CUDA=${ATTNKERNELS_CUDA:-0}, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"

# The ops' registration, fakes, autograd and opcheck, compile and export paths
# (every family's fullgraph tests; the compiled float64 matrix for CBAM's
# flavours alone), one family's parity matrix and the attention family's
# scaled_dot_product_attention path, against this torch (the built copy imported).
cd "$root/tests"
PYTHONPATH=$build "$venv_py" -m pytest -n auto -q -p no:cacheprovider -x -m "not slow" \
  -k "not triton and (not test_compiled_flavour_matches_float64 or cbam_)" \
  test_op_outputs.py test_backend.py test_determinism.py test_compile.py test_cbam.py \
  test_attention.py

if [ "${KEEP_BUILD:-0}" = 1 ]; then
  for so in "$build"/attnkernels/_C*.so; do
    strip --strip-debug -o "$root/attnkernels/$(basename "$so")" "$so"
    echo "gpu image compat: kept attnkernels/$(basename "$so") ($(du -h "$root/attnkernels/$(basename "$so")" | cut -f1))"
  done
fi
