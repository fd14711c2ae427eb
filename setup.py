"""Builds attnkernels._C: C++ CPU kernels always, CUDA kernels when torch has
CUDA and nvcc is found.

Environment:
  ATTNKERNELS_CUDA=0|1   force the CUDA kernels off or on (default: when possible)
  CUDA_HOME              the CUDA toolkit root (default: found from nvcc)
  TORCH_CUDA_ARCH_LIST   GPU architectures (default: "8.0;9.0")
  MAX_JOBS               parallel compile jobs
  ATTNKERNELS_DEBUG=1    -O0 -g
  ATTNKERNELS_SANITIZE=address,undefined
                         build the C++ kernels with these -fsanitize checks (-O1 -g,
                         errors fatal; gate_matmul on its portable path); run with the
                         sanitizer runtime preloaded, as tools/sanitize.sh does
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print(f"attnkernels setup: {msg}", file=sys.stderr)


def find_cuda_home():
    """CUDA_HOME, else the toolkit nvcc really runs from (nvcc may be a wrapper script)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                              capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        out = ""
    m = re.search(r"^#\$ _HERE_=(.*)$", out, re.MULTILINE)
    bindir = m.group(1).strip() if m else os.path.dirname(os.path.realpath(nvcc))
    return os.path.dirname(bindir)


def want_cuda(torch):
    flag = os.environ.get("ATTNKERNELS_CUDA")
    if flag == "0":
        log("ATTNKERNELS_CUDA=0: building the CPU kernels only")
        return False
    reasons = []
    if torch.version.cuda is None:
        reasons.append("this torch has no CUDA")
    cuda_home = find_cuda_home()
    if cuda_home is None or not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        reasons.append("nvcc not found (set CUDA_HOME)")
    if reasons:
        if flag == "1":
            raise RuntimeError("ATTNKERNELS_CUDA=1 but the CUDA kernels cannot be built: "
                               + "; ".join(reasons))
        log("building the CPU kernels only: " + "; ".join(reasons))
        return False
    os.environ["CUDA_HOME"] = cuda_home  # before torch.utils.cpp_extension reads it
    log(f"building the CPU and CUDA kernels with the toolkit at {cuda_home}")
    return True


def get_extensions():
    import torch

    with_cuda = want_cuda(torch)
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    debug = os.environ.get("ATTNKERNELS_DEBUG") == "1"
    sanitize = os.environ.get("ATTNKERNELS_SANITIZE", "").strip()
    opt = ["-O0", "-g"] if debug else ["-O1", "-g"] if sanitize else ["-O3"]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/schemas/*.cpp")
                     + glob.glob("csrc/composite/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # -ffp-contract=off: no FMA contraction, so every code path of a kernel rounds alike.
    # -fno-wrapv: Python's CFLAGS carry -fwrapv, which stops GCC from assuming the
    # int64 loop counters do not overflow; measured 1.4x slower gate loops with it.
    cxx = opt + ["-std=c++20", "-fvisibility=hidden", "-ffp-contract=off", "-fno-wrapv"]
    link = []
    if torch.backends.openmp.is_available():
        # at::parallel_for is an inline template: without -fopenmp its
        # "#pragma omp parallel" is dropped and every kernel runs on one thread.
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    if sanitize:
        checks = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer",
                  f"-fno-sanitize-recover={sanitize}"]
        cxx += checks
        link += checks
        log(f"ATTNKERNELS_SANITIZE={sanitize}: the C++ kernels carry these checks")
    macros = [("ATTNKERNELS_PYTHON_MODULE", None)]  # the PyInit__C stub in csrc/ops.cpp
    if sanitize:
        # gate_matmul's tiles through at::cpu::mm_out, not BLAS directly: the
        # fallback of a torch without BLAS symbols, tested here
        macros.append(("ATTNKERNELS_PORTABLE_GEMM", None))
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    info_dir = write_build_info(torch, with_cuda, sanitize)
    if not with_cuda:
        return [CppExtension("attnkernels._C", sources, define_macros=macros, include_dirs=[info_dir],
                             extra_compile_args={"cxx": cxx}, extra_link_args=link)]
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    nvcc = opt + ["-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
    return [CUDAExtension("attnkernels._C", sources, define_macros=macros, include_dirs=[info_dir],
                          extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                          extra_link_args=link)]


def write_build_info(torch, with_cuda, sanitize):
    """What this build holds, compiled into _C (csrc/ops.cpp reads the header):
    `python -m attnkernels --info` shows it. Returns the header's folder."""
    info = {
        "TORCH": torch.__version__,
        "CUDA_ARCHS": os.environ["TORCH_CUDA_ARCH_LIST"] if with_cuda else "",
        "CUDA": (torch.version.cuda or "") if with_cuda else "",
        "SANITIZE": sanitize,
        "DEBUG": "1" if os.environ.get("ATTNKERNELS_DEBUG") == "1" else "",
    }
    folder = os.path.join(ROOT, "build", "generated")
    os.makedirs(folder, exist_ok=True)
    text = "".join(f"#define ATTNKERNELS_BUILD_{k} {json.dumps(v)}\n" for k, v in info.items())
    path = os.path.join(folder, "attnkernels_build_info.h")
    if not os.path.exists(path) or open(path).read() != text:  # unchanged: no rebuild of ops.cpp
        with open(path, "w") as f:
            f.write(text)
    log("building for torch {TORCH}, CUDA architectures: {archs}".format(
        archs=info["CUDA_ARCHS"] or "none (CPU kernels only)", **info))
    return folder


def cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


setup(ext_modules=get_extensions(), cmdclass=cmdclass())
