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

from .__main__ import device_name
from .timing import measure

ops = torch.ops.attnkernels


def passes(N, C, H, W, dtype, fmt=torch.contiguous_format):
    """name -> (fn, tensors of x's size it reads)."""
    g = torch.Generator().manual_seed(0)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    r = lambda *s: torch.rand(*s, generator=g, dtype=acc)  # noqa: E731
    x = torch.randn(N, C, H, W, generator=g).to(dtype).to(memory_format=fmt)
    dy = torch.randn(N, C, H, W, generator=g).to(dtype).to(memory_format=fmt)
    R = max(1, C // 16)
    w1, b1, w2, b2 = r(R, C) - 0.5, r(R), r(C, R) - 0.5, r(C)
    ew = r(5)
    ca, sa = r(N, C), r(N, H, W)
    ah, aw = r(N, C, H), r(N, C, W)
    s_hw, s_cw, s_hc = r(N, H, W), r(N, C, W), r(N, C, H)
    _, pooled, xmax = ops.se_forward(x, w1, b1, w2, b2, 0, 1, 0)
    _, epooled = ops.eca_forward(x, ew, None, False, 0)
    _, cmax = ops.cbam_channel_pool(x)
    _, smax = ops.cbam_spatial_pool(x, ca)
    red = ops.cbam_backward_reduce(dy, x, ca, sa, cmax, smax, True)
    tp = ops.triplet_pool(x)
    tr = ops.triplet_backward_reduce(dy, x, tp[1], tp[3], tp[5])
    _, smean, sdenom = ops.simam_forward(x, 1e-4)
    out = torch.empty_like(x)
    return {
        "x.clone": (lambda: x.clone(), 1),
        "out.copy_(x)": (lambda: out.copy_(x), 1),  # into memory already mapped: no page faults
        "x.sum((2, 3))": (lambda: x.sum((2, 3)), 1),
        "se_forward": (lambda: ops.se_forward(x, w1, b1, w2, b2, 0, 1, 0), 1),
        "se_backward": (lambda: ops.se_backward(dy, x, pooled, xmax, w1, b1, w2, b2, 0, 1, 0), 2),
        "eca_forward": (lambda: ops.eca_forward(x, ew, None, False, 0), 1),
        "eca_backward": (lambda: ops.eca_backward(dy, x, epooled, ew, None, False, 0), 2),
        "cbam_channel_pool": (lambda: ops.cbam_channel_pool(x), 1),
        "cbam_spatial_pool": (lambda: ops.cbam_spatial_pool(x, ca), 1),
        "cbam_apply": (lambda: ops.cbam_apply(x, ca, sa), 1),
        "cbam_backward_reduce": (lambda: ops.cbam_backward_reduce(dy, x, ca, sa, cmax, smax, True), 2),
        "cbam_spatial_pool_backward": (
            lambda: ops.cbam_spatial_pool_backward(x, ca, smax, red[3], sa, sa, True), 1),
        "cbam_backward_apply": (lambda: ops.cbam_backward_apply(
            dy, x, ca, sa, cmax, red[2], ca, ca, smax, red[3], sa, sa, True), 2),
        "coord_pool": (lambda: ops.coord_pool(x), 1),
        "coord_apply": (lambda: ops.coord_apply(x, ah, aw, False), 1),
        "coord_backward_reduce": (lambda: ops.coord_backward_reduce(dy, x, ah, aw), 2),
        "coord_backward_apply": (lambda: ops.coord_backward_apply(dy, ah, aw, ah, aw, False), 1),
        "triplet_pool": (lambda: ops.triplet_pool(x), 1),
        "triplet_apply": (lambda: ops.triplet_apply(x, s_hw, s_cw, s_hc, True), 1),
        "triplet_backward_reduce": (
            lambda: ops.triplet_backward_reduce(dy, x, tp[1], tp[3], tp[5]), 2),
        "triplet_backward_apply": (lambda: ops.triplet_backward_apply(
            dy, s_hw, s_cw, s_hc, True, tr[3], s_hw, s_hw, tr[4], s_cw, s_cw, tr[5], s_hc, s_hc), 1),
        "simam_forward": (lambda: ops.simam_forward(x, 1e-4), 1),
        "simam_backward": (lambda: ops.simam_backward(dy, x, smean, sdenom), 2),
    }, x


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
