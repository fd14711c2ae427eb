"""The attention product's two paths at the shapes YOLO models give it:
``python -m bench.attention [--models yolo11n yolo12n ...] [--size 640] [--batch 1]``.

Every converted attention module of each model (ultralytics, built from its
YAML) is timed alone at the input it receives in that model, on both paths of
``attnkernels.attention`` (``explicit``: the original's matmul / softmax /
matmul; ``sdpa``: scaled_dot_product_attention), interleaved: inference (eval,
no autograd) and a training step (forward and backward). This is what
``attention.functional.pick_path`` is decided by; on a GPU, the GPU-proof
script runs it. Writes <out>/attention-<device>-<dtype>-nchw-<date>.csv/.json."""
import argparse
import copy

import torch

import attnkernels
from attnkernels.attention.functional import PATHS
from attnkernels.nn import DotProductAttention

from .__main__ import Progress, _peak, default_out, describe, write_results
from .networks import yolo
from .timing import measure_interleaved

MODELS = ("yolov10n", "yolo11n", "yolo12n", "yolo12s")


def attention_inputs(name: str, device, dtype, batch: int, size: int):
    """(path, converted module, its input) of every attention module of ``name``."""
    model, _ = attnkernels.convert(yolo(name))
    model = model.to(device=device, dtype=dtype).eval()
    seen = []
    hooks = [m.register_forward_pre_hook(
        lambda mod, args, path=path: seen.append((path, mod, args[0].detach().clone())))
        for path, m in model.named_modules() if isinstance(m, DotProductAttention)]
    with torch.no_grad():
        model(torch.randn(batch, 3, size, size, device=device, dtype=dtype))
    for h in hooks:
        h.remove()
    return seen


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
    parser.add_argument("--models", nargs="*", choices=MODELS, default=list(MODELS))
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
    cases = [(name, *case) for name in args.models
             for case in attention_inputs(name, device, dtype, args.batch, args.size)]
    progress = Progress(len(cases) * len(args.modes))
    rows = []
    for name, path, module, x in cases:
        for mode in args.modes:
            fns = {}
            for p in PATHS:
                m = copy.deepcopy(module).train(mode == "train")
                m.path = p
                fns[p] = step(m, x, mode)
            results = measure_interleaved(fns, device, budget_s=args.budget * len(fns))
            ratio = results["explicit"]["median_ms"] / results["sdpa"]["median_ms"]
            for p, res in results.items():
                rows.append({"family": "attention", "model": name, "module": path,
                             "class": type(module).__name__, "shape_name": f"{name}.{path}",
                             "shape": "x".join(map(str, x.shape)), "mode": mode, "provider": p,
                             "sdpa_speedup": ratio, **res, **meta})
            print(f"{progress.step()}  {name:9s} {path:22s} {'x'.join(map(str, x.shape)):16s} "
                  f"{mode:9s} explicit {results['explicit']['median_ms']:8.2f} ms"
                  f"{_peak(results['explicit'])}  sdpa {results['sdpa']['median_ms']:8.2f} ms"
                  f"{_peak(results['sdpa'])}  sdpa speedup {ratio:.2f}x", flush=True)
    path = write_results(rows, "attention", device, meta, args.out or default_out(meta))
    if path:
        print(f"wrote {path}.csv, .json")


if __name__ == "__main__":
    main()
