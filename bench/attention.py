"""The attention product's two paths at the shapes YOLO models give it:
``python -m bench.attention [--size 640] [--batch 1] [--device cuda]``; the
seeds' dot-product modules against eager and torch.compile:
``python -m bench.attention --set seeds [--batch 8] [--side 32]``.

Each distinct attention module of the YOLO models (ultralytics ``Attention``
of YOLOv10n / YOLO11n, ``AAttn`` of YOLO12n / YOLO12s; configurations and
feature-map strides read from the models built from their YAML), as the
converted module (attnkernels.attention, from its reference class: no
ultralytics needed, so the GPU proof runs it), timed on both paths
(``explicit``: the original's matmul / softmax / matmul; ``sdpa``:
scaled_dot_product_attention), interleaved: inference (eval, no autograd) and
a training step (forward and backward). ``attention.functional.pick_path`` is
decided by these numbers.

``--set seeds``: DANet (seed 002's DAModule at C channels on a side x side
map), External-Attention-pytorch's ScaledDotProductAttention as DANet's
position branch uses it (one head, d_k = d_v = C, self-attention over the
side^2 pixels), seed 000's MultiHeadSelfAttention (8 heads), CoTAttention
(C, kernel 3; attnkernels.cot), seed 000's GAM_Attention (C, C;
attnkernels.gam) and the YOLO repositories' (grouped 7x7 convs, the spatial
attention shuffled), and the official DANet's PAM_Module / CAM_Module: the original
in eager mode, under torch.compile, and converted (``attnkernels``, path by
device), interleaved, with the peak memory of each. ``train`` keeps the
modules' dropout (p = 0.1, as constructed); ``train-nodrop`` sets it to 0.

Writes <out>/attention-<device>-<dtype>-nchw-<date>.csv/.json (seeds:
attention-seeds-...)."""
import argparse
import copy

import torch

import attnkernels
from attnkernels.attention import reference as ref
from attnkernels.cot import reference as cot_ref
from attnkernels.gam import reference as gam_ref
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


# name -> (module factory (C, side), input factory (batch, C, side)); the
# inputs are one tensor passed as the forward's every argument (self-attention)
SEED_CASES = {
    "danet": (lambda c, side: ref.danet(c, 3, side, side, ref.DAModuleSeed),
              lambda b, c, side: torch.randn(b, c, side, side)),
    "self-attention": (lambda c, side: ref.ScaledDotProductAttention(c, c, c, 1),
                       lambda b, c, side: torch.randn(b, side * side, c)),
    "mhsa-8heads": (lambda c, side: ref.MultiHeadSelfAttention(c, 8),
                    lambda b, c, side: torch.randn(b, side * side, c)),
    "cot": (lambda c, side: cot_ref.CoTAttention(c, 3),
            lambda b, c, side: torch.randn(b, c, side, side)),
    "gam": (lambda c, side: gam_ref.GAM_Attention(c, c),
            lambda b, c, side: torch.randn(b, c, side, side)),
    "gam-yolo": (lambda c, side: gam_ref.GAM_AttentionYOLO(c, c),
                 lambda b, c, side: torch.randn(b, c, side, side)),
    "pam-official": (lambda c, side: ref.PAM_Module(c),
                     lambda b, c, side: torch.randn(b, c, side, side)),
    "cam-official": (lambda c, side: ref.CAM_Module(c),
                     lambda b, c, side: torch.randn(b, c, side, side)),
}
SEED_ARGS = {"danet": 1, "self-attention": 3, "mhsa-8heads": 3, "cot": 1, "gam": 1,
             "gam-yolo": 1, "pam-official": 1, "cam-official": 1}  # how many times x is passed
SEED_EXTRA = {"mhsa-8heads": (None,)}                               # then these (its mask)


def step(module, x, mode, times=1, extra=()):
    """One inference (no autograd) or training step (forward, backward) of
    ``module`` on x passed ``times`` times, then ``extra``."""
    if mode == "inference":
        def fn():
            with torch.no_grad():
                module(*(x,) * times, *extra)
        return fn
    xg = x.detach().requires_grad_()

    def fn():
        module(*(xg,) * times, *extra).sum().backward()
        module.zero_grad(set_to_none=True)
        xg.grad = None
    return fn


def run_seeds(args, device, dtype, meta, progress):
    rows = []
    for name in args.cases:
        make, make_x = SEED_CASES[name]
        torch.manual_seed(0)
        original = make(args.channels, args.side).to(device=device, dtype=dtype)
        x = make_x(args.batch, args.channels, args.side).to(device=device, dtype=dtype)
        converted, report = attnkernels.convert(copy.deepcopy(original))
        assert report.converted and not report.left_alone, str(report)
        for mode in args.modes:
            fns = {}
            for provider in args.providers:
                m = copy.deepcopy(converted if provider == "attnkernels" else original)
                m.train(mode != "inference")
                if mode == "train-nodrop":
                    for d in m.modules():
                        if isinstance(d, torch.nn.Dropout):
                            d.p = 0.0
                if provider == "compile":
                    torch._dynamo.reset()
                    m = torch.compile(m)
                fns[provider] = step(m, x, mode, SEED_ARGS[name], SEED_EXTRA.get(name, ()))
            results = measure_interleaved(fns, device, budget_s=args.budget * len(fns))
            base = results.get("eager", results[args.providers[0]])
            for p, res in results.items():
                rows.append({"family": "attention", "shape_name": name, "mode": mode,
                             "shape": "x".join(map(str, x.shape)), "provider": p,
                             "speedup_vs_eager": base["median_ms"] / res["median_ms"],
                             "peak_vs_eager": res["peak_mb"] / base["peak_mb"], **res, **meta})
            print(f"{progress.step()}  {name:14s} {'x'.join(map(str, x.shape)):14s} {mode:12s} "
                  + "  ".join(f"{p} {r['median_ms']:8.2f} ms{_peak(r)}"
                              for p, r in results.items()), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.attention",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=["yolo", "seeds"], default="yolo",
                        help="the YOLO models' attention on both paths, or the seeds' modules "
                             "against eager and torch.compile")
    parser.add_argument("--cases", nargs="*", choices=list(CASES) + list(SEED_CASES),
                        default=None, help="default: every case of the set")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--batch", type=int, default=None, help="default: 1 (yolo), 8 (seeds)")
    parser.add_argument("--size", type=int, default=640, help="yolo: the image size")
    parser.add_argument("--channels", type=int, default=256, help="seeds: C")
    parser.add_argument("--providers", nargs="*", choices=["eager", "compile", "attnkernels"],
                        default=["eager", "compile", "attnkernels"],
                        help="seeds: what runs (eager is the baseline of the ratios)")
    parser.add_argument("--side", type=int, default=32, help="seeds: the map's side")
    parser.add_argument("--modes", nargs="*", choices=["inference", "train", "train-nodrop"],
                        default=None, help="default: inference, train (seeds: and train-nodrop)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per case")
    parser.add_argument("--out", default=None,
                        help="the folder to write to (default: ./bench-results/<date>/)")
    args = parser.parse_args(argv)
    seeds = args.set == "seeds"
    cases = SEED_CASES if seeds else CASES
    args.cases = args.cases or list(cases)
    if not set(args.cases) <= set(cases):
        parser.error(f"--set {args.set} has the cases {sorted(cases)}")
    args.batch = args.batch or (8 if seeds else 1)
    args.modes = args.modes or (["inference", "train", "train-nodrop"] if seeds
                                else ["inference", "train"])
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    meta = describe(device, dtype, False, "python -m bench.attention", argv)
    where = (f"C={args.channels} on {args.side}x{args.side}" if seeds
             else f"at {args.size}x{args.size}")
    print(f"# {meta['device']} | torch {meta['torch']} | {meta['dtype']} "
          f"| batch {args.batch} {where}", flush=True)
    progress = Progress(len(args.cases) * len(args.modes))
    if seeds:
        rows = run_seeds(args, device, dtype, meta, progress)
        path = write_results(rows, "attention-seeds", device, meta,
                             args.out or default_out(meta))
        if path:
            print(f"wrote {path}.csv, .json")
        return
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
