"""``python -m attnkernels --info``: what this installation holds — the
compiled extension (CPU kernels, CUDA kernels and their architectures, the
torch it was built against), Triton, and which backends run here and why not."""
import argparse
import os
import platform
import sys

import torch

import attnkernels
from attnkernels._core import extension as _extension


def _version(pkg: str) -> str:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # noqa: BLE001  (not installed)
        return "not installed"


def info() -> str:
    lines = [f"attnkernels {attnkernels.__version__} at {_extension.PACKAGE_DIR}",
             f"python {platform.python_version()}, torch {torch.__version__} "
             f"(CUDA {torch.version.cuda or 'none'}), triton {_version('triton')}"]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name()} "
                     f"(sm {'.'.join(map(str, torch.cuda.get_device_capability()))})")
    else:
        lines.append("GPU: none")
    if _extension.load():
        if os.environ.get("ATTNKERNELS_EXTENSION"):
            lines.append(f"compiled extension: {os.environ['ATTNKERNELS_EXTENSION']} "
                         "(ATTNKERNELS_EXTENSION)")
        else:
            from attnkernels import _C

            archs = getattr(_C, "cuda_architectures", "")
            lines.append(f"compiled extension: {_C.__file__}")
            lines.append(f"  built with torch {getattr(_C, 'built_with_torch', '?')}"
                         + (f", sanitizers {_C.sanitize}" if getattr(_C, "sanitize", "") else "")
                         + (", debug (-O0)" if getattr(_C, "debug", "") else ""))
            lines.append("  CPU kernels: yes")
            lines.append("  CUDA kernels: " + (
                f"yes, for architectures {archs} (CUDA {_C.built_with_cuda})" if archs
                else "no (built without CUDA: no nvcc, a CPU-only torch, or ATTNKERNELS_CUDA=0)"))
    else:
        lines.append(f"compiled extension: not loaded ({_extension.error()})")
        lines.append(f"  {_extension.advice()}")
    lines.append("backends:")
    for name, why_not in attnkernels.available_backends().items():
        lines.append(f"  {name:10s}" + ("runs here" if why_not is None else f"no: {why_not}"))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnkernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--info", action="store_true", help="print what this installation holds")
    args = parser.parse_args(argv)
    if not args.info:
        parser.print_help()
        return 0
    print(info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
