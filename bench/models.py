"""Model-level benchmark: ``python -m bench.models [--models ...] [--batch 8] [--size 224]``.

Each real network (timm and torchvision, random weights; on request the
ultralytics YOLO models of bench.networks.YOLO_NETWORKS) as built upstream
("original") and after ``attnkernels.convert`` ("converted"), each in eager
mode and under ``torch.compile`` (``converted-ours-compile``, on request: with
our ops in every module, where ``auto`` would give some families to inductor),
timed in interleaved rounds; and two floors:
the original without its attention modules (no attention kernel beats it) and
with each replaced by a copy (no kernel that writes its output and its input
gradient beats it). Inference (eval, no autograd) and a training step (forward,
cross-entropy, backward, SGD step; a YOLO model's loss is the sum of its
outputs' means, the same work for every provider), in images per second,
with peak memory.
Writes bench/results/models-<device>-<dtype>-<layout>-<date>.csv/.json."""
import argparse
import copy
import sys

import torch
import torch.nn.functional as F

import attnkernels

from .__main__ import (CopyFloor, Progress, _peak, default_out, describe, device_fused,
                       unavailable, write_results)
from .networks import NETWORKS, YOLO_NETWORKS, attention_paths, make_attention_matter, yolo
from .timing import measure_interleaved

# without-attention: the original with every attention module replaced by
# nn.Identity, the floor no attention kernel can beat (Amdahl's bound).
# copy-attention: each replaced by CopyFloor, which writes a fresh output
# forward and a fresh input gradient backward, as every out-of-place attention
# module must: the floor for a kernel that moves no more than that.
# converted-ours-compile (on request): the converted network compiled with every
# fused module on the device's first fused backend, our ops even where, under
# auto, torch.compile gives the family to inductor (_core.backend.select).
PROVIDERS = ("original", "converted", "without-attention", "copy-attention",
             "original-compile", "converted-compile", "converted-ours-compile")
DEFAULT_PROVIDERS = PROVIDERS[:-1]
QUICK_MODELS = ["cbam_resnet50", "coord_resnet50", "triplet_resnet50"]


def replace_attention(model: torch.nn.Module, make) -> torch.nn.Module:
    """A copy of ``model`` with every attention module replaced by ``make()``."""
    stripped = copy.deepcopy(model)
    bookkeeping = set(vars(torch.nn.Module()))
    for path in attention_paths(stripped):
        parent, _, name = path.rpartition(".")
        holder = stripped.get_submodule(parent) if parent else stripped
        new = make()
        # what a framework attached to the layer goes along (ultralytics' f, i: its forward reads them)
        new.__dict__.update({k: v for k, v in vars(getattr(holder, name)).items()
                             if k not in bookkeeping and k not in vars(new)})
        setattr(holder, name, new)
    return stripped


def without_attention(model: torch.nn.Module) -> torch.nn.Module:
    return replace_attention(model, torch.nn.Identity)


def copy_attention(model: torch.nn.Module) -> torch.nn.Module:
    return replace_attention(model, CopyFloor)


def ours(converted: torch.nn.Module, backend: str) -> torch.nn.Module:
    """A copy of a converted network with every fused module on ``backend``."""
    from attnkernels._core.modules import pin_backend

    return pin_backend(copy.deepcopy(converted), backend)


def build(name: str, device, dtype, fmt, batch: int, size: int):
    """(original, converted, x, target): the same weights; BatchNorm statistics
    from a batch of x so that every attention module matters."""
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype).to(memory_format=fmt)
    made = NETWORKS[name]() if name in NETWORKS else yolo(name)
    original = made.to(device=device, dtype=dtype, memory_format=fmt)
    make_attention_matter(original, x)
    converted, report = attnkernels.convert(copy.deepcopy(original))
    if report.left_alone:
        raise RuntimeError(f"{name}: attention modules left alone:\n{report}")
    target = torch.randint(0, 1000, (batch,), device=device)
    return original, converted, x, target


def step_fn(model, forward, x, target, mode):
    if mode == "inference":
        model.eval()

        def fn():
            with torch.no_grad():
                forward(x)
        return fn
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def fn():
        out = forward(x)
        loss = (F.cross_entropy(out, target) if isinstance(out, torch.Tensor)
                else sum(t.float().mean() for t in _tensors(out)))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)  # here, not first: see __main__.run_case
    return fn


def _tensors(out) -> list:
    """The tensors of a detection model's (nested) output."""
    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out
    return [t for v in values for t in _tensors(v)]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", choices=list(NETWORKS) + list(YOLO_NETWORKS),
                        default=list(NETWORKS),
                        help="default: the timm and torchvision networks; the YOLO ones "
                             "(ultralytics, AGPL-3.0) when named")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--modes", nargs="*", choices=["inference", "train"],
                        default=["inference", "train"])
    parser.add_argument("--providers", nargs="*", choices=PROVIDERS, default=list(DEFAULT_PROVIDERS))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds of timing per case")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK_MODELS)}, eager providers, 1 s per case")
    parser.add_argument("--out", default=None,
                        help="the folder to write to (default: ./bench-results/<date>/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.models = QUICK_MODELS if args.models == list(NETWORKS) else args.models
        args.providers = [p for p in args.providers if not p.endswith("compile")]
        args.budget = min(args.budget, 1.0)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    # the converted networks run "auto": without a fused backend of the device
    # they would time the reference modules and call it ours
    fused = device_fused(device)
    if any(p.startswith("converted") for p in args.providers) and not any(
            attnkernels.available_backends()[p] is None for p in fused):
        sys.exit(unavailable(fused, device, "python -m bench.models",
                             "--providers original original-compile"))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    meta = describe(device, dtype, args.channels_last, "python -m bench.models", argv)
    print(f"# {meta['device']} | torch {meta['torch']} | {meta['dtype']} {meta['memory_format']} "
          f"| batch {args.batch} at {args.size}x{args.size}", flush=True)
    progress = Progress(len(args.models) * len(args.modes) * len(args.providers))
    rows = []
    for name in args.models:
        original, converted, x, target = build(name, device, dtype, fmt, args.batch, args.size)
        for mode in args.modes:
            fns = {}
            for prov in args.providers:
                model = (ours(converted, fused[0]) if prov == "converted-ours-compile" else
                         converted if prov.startswith("converted") else
                         without_attention(original) if prov == "without-attention" else
                         copy_attention(original) if prov == "copy-attention" else original)
                forward = torch.compile(model) if prov.endswith("compile") else model
                fns[prov] = step_fn(model, forward, x, target, mode)
            results = measure_interleaved(fns, device, budget_s=args.budget * len(fns))
            torch._dynamo.reset()
            for prov, res in results.items():
                row = {"family": "models", "model": name, "shape_name": name,
                       "shape": "x".join(map(str, x.shape)), "mode": mode, "provider": prov,
                       **res, "images_per_s": args.batch / res["median_ms"] * 1e3, **meta}
                rows.append(row)
                print(f"{progress.step()}  {name:22s} {mode:9s} {prov:17s} "
                      f"{res['median_ms']:9.1f} ms  {row['images_per_s']:7.1f} img/s"
                      f" (p20-p80 {res['p20_ms']:.0f}-{res['p80_ms']:.0f}{_peak(res)})", flush=True)
        del original, converted
    path = write_results(rows, "models", device, meta, args.out or default_out(meta))
    print(speedup_table(rows))
    if path:
        print(f"wrote {path}.csv, .json")


def speedup_table(rows) -> str:
    """Markdown: per model and mode, each provider's time (ms) and its speedup
    over the original network in eager mode."""
    provs = list(dict.fromkeys(r["provider"] for r in rows))
    cells = {(r["model"], r["mode"], r["provider"]): r["median_ms"] for r in rows}
    out = ["| model | mode | " + " | ".join(f"{p} (ms)" for p in provs) + " |",
           "|---|---|" + "---|" * len(provs)]
    for model, mode in dict.fromkeys((r["model"], r["mode"]) for r in rows):
        base = cells.get((model, mode, "original"))
        line = []
        for p in provs:
            t = cells.get((model, mode, p))
            line.append("–" if t is None else f"{t:.0f}" + (f" ({base / t:.2f}x)" if base else ""))
        out.append(f"| {model} | {mode} | " + " | ".join(line) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
