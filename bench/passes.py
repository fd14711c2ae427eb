"""The CPU passes over x one by one: ``python -m bench.passes [--shape 16x256x56x56] [--channels-last] [--budget 1]``.

Each raw ``torch.ops.attnkernels`` pass of the CPU kernels (no gate network,
no autograd), timed against ``x.clone()`` right before it and against
``out.copy_(x)`` (into preallocated memory: the floor the module targets are
stated against) and ``x.sum((2, 3))`` (one read of x, ATen's own vectorised
reduction). Reads are
reported in GB/s of x (and dy) read; a pass that writes a fresh x-sized output
pays the same page faults as the clone. For kernel work: the module benchmarks
(``python -m bench``) mix these passes with the gate networks and autograd."""
import argparse

import torch

import attnkernels  # noqa: F401  (registers the ops)
from attnkernels.families import FAMILIES

from .__main__ import device_name
from .timing import measure


def passes(N, C, H, W, dtype, fmt=torch.contiguous_format):
    """name -> (fn, tensors of x's size it reads)."""
    g = torch.Generator().manual_seed(0)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    r = lambda *s: torch.rand(*s, generator=g, dtype=acc)  # noqa: E731
    x = torch.randn(N, C, H, W, generator=g).to(dtype).to(memory_format=fmt)
    dy = torch.randn(N, C, H, W, generator=g).to(dtype).to(memory_format=fmt)
    out = torch.empty_like(x)
    table = {
        "x.clone": (lambda: x.clone(), 1),
        "out.copy_(x)": (lambda: out.copy_(x), 1),  # into memory already mapped: no page faults
        "x.sum((2, 3))": (lambda: x.sum((2, 3)), 1),
    }
    for family in FAMILIES:  # each family's raw passes (its bench.raw_passes)
        table.update(family.bench.raw_passes(x, dy, r))
    return table, x


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.passes", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="16x256x56x56")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per pass")
    parser.add_argument("--only", nargs="*", help="pass names to run (x.clone always runs)")
    args = parser.parse_args(argv)
    N, C, H, W = (int(v) for v in args.shape.split("x"))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    table, x = passes(N, C, H, W, getattr(torch, args.dtype), fmt)
    dev = torch.device("cpu")
    layout = " --channels-last" if args.channels_last else ""
    print(f"# {device_name(dev)} | torch {torch.__version__} | {args.dtype} {args.shape}"
          f"{' channels_last' if args.channels_last else ''} | `python -m bench.passes "
          f"--shape {args.shape} --dtype {args.dtype}{layout} --budget {args.budget}`")
    print("\n| pass | ms | x clone | GB/s read |\n|---|---|---|---|")
    nbytes = x.numel() * x.element_size()
    for name, (fn, reads) in table.items():
        if args.only and name not in args.only and name != "x.clone":
            continue
        clone = measure(table["x.clone"][0], dev, budget_s=args.budget)["median_ms"]
        ms = measure(fn, dev, budget_s=args.budget)["median_ms"]
        print(f"| {name} | {ms:.3g} | {ms / clone:.2f}x | {reads * nbytes / ms / 1e6:.1f} |")


if __name__ == "__main__":
    main()
