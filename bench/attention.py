"""The attention product's two paths at the shapes YOLO models give it:
``python -m bench.attention [--size 640] [--batch 1] [--device cuda]``.

Each distinct attention module of the YOLO models (ultralytics ``Attention``
of YOLOv10n / YOLO11n, ``AAttn`` of YOLO12n / YOLO12s; configurations and
feature-map strides read from the models built from their YAML), as the
converted module (attnkernels.attention, from its reference class: no
ultralytics needed, so the GPU proof runs it), timed on both paths
(``explicit``: the original's matmul / softmax / matmul; ``sdpa``:
scaled_dot_product_attention), interleaved: inference (eval, no autograd) and
a training step (forward and backward). ``attention.functional.pick_path`` is
decided by these numbers. Writes <out>/attention-<device>-<dtype>-nchw-<date>.csv/.json."""
import argparse
import copy

import torch

from attnkernels.attention.functional import PATHS
from attnkernels.attention.modules import UltralyticsAreaAttention, UltralyticsAttention

from .__main__ import Progress, _peak, default_out, describe, write_results
from .timing import measure_interleaved

# name -> (class, constructor arguments, stride of its feature map): every
# distinct one of yolov10n, yolo11n (C2PSA / PSA at P5), yolo12n and yolo12s
# (A2C2f at P4 with 4 areas and at P5 with 1)
CASES = {
    "yolo11n.psa": (UltralyticsAttention, (128, 2), 32),       # also yolov10n's
    "yolo12n.p4": (UltralyticsAreaAttention, (64, 2, 4), 16),
    "yolo12n.p5": (UltralyticsAreaAttention, (128, 4, 1), 32),
    "yolo12s.p4": (UltralyticsAreaAttention, (128, 4, 4), 16),
    "yolo12s.p5": (UltralyticsAreaAttention, (256, 8, 1), 32),
}


def step(module, x, mode):
    if mode == "inference":
        def fn():
            with torch.no_grad():
                module(x)
        return fn
    xg = x.detach().requires_grad_()

    def fn():
        module(xg).sum().backward()
        module.zero_grad(set_to_none=True)
        xg.grad = None
    return fn


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.attention",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", choices=list(CASES), default=list(CASES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--modes", nargs="*", choices=["inference", "train"],
                        default=["inference", "train"])
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per case")
    parser.add_argument("--out", default=None,
                        help="the folder to write to (default: ./bench-results/<date>/)")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    meta = describe(device, dtype, False, "python -m bench.attention", argv)
    print(f"# {meta['device']} | torch {meta['torch']} | {meta['dtype']} "
          f"| batch {args.batch} at {args.size}x{args.size}", flush=True)
    progress = Progress(len(args.cases) * len(args.modes))
    rows = []
    for name in args.cases:
        cls, ctor, stride = CASES[name]
        torch.manual_seed(0)
        module = cls(*ctor).to(device=device, dtype=dtype)
        side = args.size // stride
        x = torch.randn(args.batch, ctor[0], side, side, device=device, dtype=dtype)
        for mode in args.modes:
            fns = {}
            for p in PATHS:
                m = copy.deepcopy(module).train(mode == "train")
                m.path = p
                fns[p] = step(m, x, mode)
            results = measure_interleaved(fns, device, budget_s=args.budget * len(fns))
            ratio = results["explicit"]["median_ms"] / results["sdpa"]["median_ms"]
            for p, res in results.items():
                rows.append({"family": "attention", "shape_name": name, "class": cls.__name__,
                             "shape": "x".join(map(str, x.shape)), "mode": mode, "provider": p,
                             "sdpa_speedup": ratio, **res, **meta})
            print(f"{progress.step()}  {name:11s} {'x'.join(map(str, x.shape)):14s} {mode:9s} "
                  f"explicit {results['explicit']['median_ms']:8.2f} ms"
                  f"{_peak(results['explicit'])}  sdpa {results['sdpa']['median_ms']:8.2f} ms"
                  f"{_peak(results['sdpa'])}  sdpa speedup {ratio:.2f}x", flush=True)
    path = write_results(rows, "attention", device, meta, args.out or default_out(meta))
    if path:
        print(f"wrote {path}.csv, .json")


if __name__ == "__main__":
    main()
