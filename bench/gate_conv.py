"""The gate networks' CPU convolutions against PyTorch's: ``python -m bench.gate_conv [--budget 1]``.

For each plane shape CBAM and Triplet convolve at real-network sizes, the 7x7
2 -> 1 conv, its 1 -> 2 input-gradient conv and its weight gradient, timed
with PyTorch's ops (oneDNN's F.conv2d, aten.convolution_backward) and with
``attnkernels::gate_conv2d`` / ``gate_conv2d_weight_grad``. Set
ATTNKERNELS_CPU_BASELINE=1 to time the kernels' non-AVX2 build."""
import argparse
import os

import torch
import torch.nn.functional as F

import attnkernels  # noqa: F401  (registers the ops)

from .__main__ import device_name
from .timing import measure

# (N, 2, rows, cols): Triplet's cw/hc planes and CBAM's/Triplet's hw plane at
# ResNet-50 stage sizes, longer side as columns (as attnkernels passes them).
SHAPES = [(16, 2, 56, 256), (16, 2, 56, 56), (16, 2, 112, 112), (64, 2, 14, 1024),
          (128, 2, 7, 2048)]


def cases(shape, k=7):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    grad = torch.randn(shape[0], 1, *shape[2:], generator=g)
    w = torch.randn(1, shape[1], k, k, generator=g)
    w_t = torch.randn(shape[1], 1, k, k, generator=g)
    ops = torch.ops.attnkernels
    p = k // 2
    return {
        "conv 2->1 oneDNN": lambda: F.conv2d(x, w, padding=p),
        "conv 2->1 ours": lambda: ops.gate_conv2d(x, w),
        "conv 1->2 oneDNN": lambda: F.conv2d(grad, w_t, padding=p),
        "conv 1->2 ours": lambda: ops.gate_conv2d(grad, w_t),
        "weight grad aten": lambda: torch.ops.aten.convolution_backward(
            grad, x, w, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1, [False, True, False]),
        "weight grad ours": lambda: ops.gate_conv2d_weight_grad(grad, x, k),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.gate_conv",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args(argv)
    dev = torch.device("cpu")
    build = "baseline" if os.environ.get("ATTNKERNELS_CPU_BASELINE", "0") not in ("", "0") \
        else "AVX2 where the CPU has it"
    print(f"# {device_name(dev)} | torch {torch.__version__}"
          f" | kernels: {build} | `python -m bench.gate_conv --budget {args.budget}`")
    names = list(cases(SHAPES[0]))
    print("\n| shape | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for shape in SHAPES:
        ms = [measure(fn, dev, budget_s=args.budget)["median_ms"] for fn in cases(shape).values()]
        print(f"| {shape} | " + " | ".join(f"{v:.2f}" for v in ms) + " |")


if __name__ == "__main__":
    main()
