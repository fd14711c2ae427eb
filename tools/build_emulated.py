"""Builds the CUDA kernels for the CPU SIMT emulator (csrc/cuda/simt.h).

    python tools/build_emulated.py [--build-dir DIR]

Compiles csrc/cuda/*.cu with the host compiler (through the csrc/simt/*.cpp
wrappers, ATTNKERNELS_SIMT defined) together with the op schemas, the native
composites and the CPU helper ops they call (gate_matmul, gate_conv, outputs),
but none of the C++ CPU kernels: in the library it builds, the CPU dispatch key
of every attnkernels op runs the CUDA kernels' code, emulated. Prints the
library's path; load it instead of attnkernels._C with
ATTNKERNELS_EXTENSION=PATH, and the "cpu" backend then runs the CUDA kernels.
ATTNKERNELS_SIMT_SEED picks the emulator's schedule."""
import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sources(root: str = ROOT):
    csrc = os.path.join(root, "csrc")
    helpers = [os.path.join(csrc, "cpu", f) for f in ("gate_matmul.cpp", "gate_conv.cpp",
                                                      "outputs.cpp")]
    return sorted([os.path.join(csrc, "ops.cpp")] + helpers
                  + glob.glob(os.path.join(csrc, "schemas", "*.cpp"))
                  + glob.glob(os.path.join(csrc, "composite", "*.cpp"))
                  + glob.glob(os.path.join(csrc, "simt", "*.cpp")))


def build(build_dir: str, verbose: bool = False, root: str = ROOT) -> str:
    """Builds (incrementally: ninja, header dependencies included) the sources
    under ``root`` (another copy of the tree, for tools/cuda_mutants.py)."""
    import torch
    from torch.utils.cpp_extension import load

    os.makedirs(build_dir, exist_ok=True)
    flags = ["-O2", "-std=c++20", "-ffp-contract=off", "-fno-wrapv"]
    if torch.backends.openmp.is_available():
        flags.append("-fopenmp")
    load(name="attnkernels_emulated", sources=sources(root), extra_cflags=flags,
         extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else [], build_directory=build_dir,
         is_python_module=False, with_cuda=False, verbose=verbose)
    return os.path.join(build_dir, "attnkernels_emulated.so")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build", "emulated"))
    parser.add_argument("--root", default=ROOT, help="the tree whose csrc/ to build")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    print(build(args.build_dir, args.verbose, os.path.abspath(args.root)))


if __name__ == "__main__":
    sys.exit(main())
