"""Micro-benchmarks: ``python -m bench [--quick | --full] [--modules se eca cbam coord triplet simam] [--device cpu|cuda] [--dtype ...] [--shapes ...] [--batches 1 8 32] [--out DIR]``.

For each module family and shape: ``out.copy_(x)`` into preallocated memory
(one read and one write of x: the floor every time is reported against) and
``x.clone()`` (the same plus a fresh allocation's page faults), both timed
right before each case, the eager reference module, ``torch.compile`` of it,
and every fused backend of the device (the C++ kernels on the CPU, CUDA and
Triton on a GPU: a run that cannot load one of them stops and says why);
modes ``forward`` (inference, no autograd), ``backward`` (alone, on one
retained graph; ``--modes`` adds it) and ``fwd+bwd``. ``--providers ... copy``
adds the floor of any out-of-place attention module: ``x * 1``, which writes y
forward and dx backward and reads nothing else.

The default run times each family's main flavour on a few real shapes (about
12 minutes on a 2-core CPU, CoT's library convolutions 2 of them); ``--quick`` one shape (batch 8 on the CPU), ``--full`` every flavour
and shape. Writes a long-format CSV and JSON per family (with the device name,
versions, date and command) and a PNG of the speedups to ``--out``
(default ``./bench-results/<date>/``), and prints a summary table."""
import argparse
import csv
import datetime
import json
import os
import platform
import sys
import time

import torch

import attnkernels

from attnkernels.families import FAMILIES as _FAMILIES
from .plot import FUSED
from .timing import measure

# --quick: the shape the targets are set on (per device) and a short timing budget.
QUICK_SHAPES, QUICK_BUDGET = {"cpu": "resnet50-stage1", "cuda": "record-b64"}, 0.15
# ... at batch 8 on the CPU: --quick within a minute on 2 cores, compiling included
QUICK_BATCHES = {"cpu": [8], "cuda": None}
# The default run (about 12 minutes on a 2-core CPU, cold): each family's main flavour
# on a few real shapes; --full: every flavour and shape.
DEFAULT_SHAPES = {"cpu": ["resnet50-stage1", "resnet50-stage4", "inference-b1"],
                  "cuda": ["record-b64", "resnet50-stage3", "inference-b1"]}
DEFAULT_BUDGET, FULL_BUDGET = 0.3, 1.0
# each family's benchmark cases (attnkernels/<family>/bench.py), by name
FAMILIES = {f.name: f.bench for f in _FAMILIES}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def describe(device: torch.device, dtype: torch.dtype, channels_last: bool, program: str,
             argv=None) -> dict:
    """What every result row carries: machine, versions, date, the command, dtype, layout."""
    return {
        "device": device_name(device), "torch": torch.__version__,
        "triton": _version("triton"), "attnkernels": attnkernels.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": program + " " + " ".join(argv if argv is not None else sys.argv[1:]),
        "dtype": str(dtype).replace("torch.", ""),
        "memory_format": "channels_last" if channels_last else "nchw",
        # PyTorch's switch for transparent huge pages in its CPU allocator: a
        # fresh output's page faults, most of x.clone() here, shrink with it.
        "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
        # ours, for the CPU kernels' outputs only (csrc/cpu/outputs.cpp)
        "attnkernels_huge_pages": os.environ.get("ATTNKERNELS_HUGE_PAGES", "1"),
    }


def device_fused(device: torch.device):
    """The fused backends of a device: the C++ kernels on the CPU, CUDA and Triton on a GPU."""
    return ["cpu"] if device.type == "cpu" else ["cuda", "triton"]


def providers(device: torch.device):
    """The default: eager, torch.compile and the fused backends of the device
    (whether they load or not: main() refuses to run without one)."""
    return ["eager", "compile"] + device_fused(device)


def quiet_compiler():
    """Stops inductor's pool of compile workers (it starts again at the next
    compile): on a small CPU machine the pool, still busy after a compiled
    case, took cores from the cases timed after it (seen: the C++ ECA's
    fwd+bwd at 113 ms instead of 12 ms, right after the compiled one)."""
    from torch._inductor import async_compile

    shutdown = getattr(async_compile, "shutdown_compile_workers", None)
    if shutdown is not None:
        shutdown()


def default_out(meta) -> str:
    """./bench-results/<date>/: in the user's working directory, never the package tree."""
    return os.path.join("bench-results", meta["date"][:10])


class CopyFloor(torch.nn.Module):
    """y = x * 1: one fresh x-sized write forward and one backward (MulBackward),
    the least an attention module y = x * gate(x) writes."""

    def forward(self, x):
        return x * 1.0


def build(provider: str, fused: torch.nn.Module):
    if provider == "copy":
        return CopyFloor()
    if provider == "eager":
        return fused.reference_module()
    if provider == "compile":
        torch._dynamo.reset()
        return torch.compile(fused.reference_module())
    m = fused
    m.backend = provider
    return m


def run_case(module, x, mode):
    if mode == "forward":
        def fn():
            with torch.no_grad():
                module(x)
        return fn
    xg = x.detach().requires_grad_()
    dy = torch.randn_like(x)
    # Each call drops the gradients it made before it returns: a call that began
    # by dropping the last call's would free them inside the measured window, and
    # the peak above the level at the call would come out short by their size.
    def drop_grads():
        xg.grad = None
        for p in module.parameters():
            p.grad = None

    if mode == "backward":  # one forward; each call runs the backward alone on its graph
        y = module(xg)

        def fn():
            y.backward(dy, retain_graph=True)
            drop_grads()
        return fn

    def fn():
        module(xg).backward(dy)
        drop_grads()
    return fn


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="*", choices=sorted(FAMILIES), default=sorted(FAMILIES),
                        help="module families to run (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="default: bfloat16 on CUDA, float32 on the CPU")
    parser.add_argument("--flavours", nargs="*", default=None,
                        help="flavour groups to run, e.g. timm official (default: each family's "
                             "main one; --full: every one)")
    parser.add_argument("--shapes", nargs="*", default=None,
                        help=f"shape names to run (default: {DEFAULT_SHAPES}; --full: all)")
    parser.add_argument("--batches", nargs="*", type=int, default=None,
                        help="a batch sweep: every shape at each of these batch sizes "
                             "(named <shape>-b<N>)")
    parser.add_argument("--modes", nargs="*", choices=["forward", "backward", "fwd+bwd"],
                        default=["forward", "fwd+bwd"],
                        help="backward: the backward pass alone, on one forward's graph")
    parser.add_argument("--providers", nargs="*", default=None,
                        help="eager, compile, cuda, triton, cpu, copy (default: eager, compile "
                             "and every fused backend of the device: cpu on the CPU, cuda and "
                             "triton on a GPU)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds of timing per case (default {DEFAULT_BUDGET}; --quick "
                             f"{QUICK_BUDGET}; --full {FULL_BUDGET})")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help=f"one shape ({QUICK_SHAPES}; batch 8 on the CPU), {QUICK_BUDGET} s "
                           "per case (under a minute on a 2-core CPU)")
    size.add_argument("--full", action="store_true",
                      help=f"every flavour and shape, {FULL_BUDGET} s per case (an hour on a "
                           "2-core CPU)")
    parser.add_argument("--out", default=None,
                        help="the folder to write to (default: ./bench-results/<date>/)")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.quick:
        args.shapes = args.shapes or [QUICK_SHAPES[device.type]]
        args.batches = args.batches or QUICK_BATCHES[device.type]
    elif not args.full:
        args.shapes = args.shapes or DEFAULT_SHAPES[device.type]
    if args.budget is None:
        args.budget = QUICK_BUDGET if args.quick else FULL_BUDGET if args.full else DEFAULT_BUDGET
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    provs = args.providers or providers(device)
    missing = unavailable(provs, device)
    if missing:
        sys.exit(missing)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    meta = describe(device, dtype, args.channels_last, "python -m bench", argv)
    out = args.out or default_out(meta)
    print(f"# {meta['device']} | torch {meta['torch']} | {meta['dtype']} {meta['memory_format']}"
          f" | providers {' '.join(provs)}", flush=True)
    runs = [(f, flavour) for f in args.modules for flavour in family_flavours(FAMILIES[f], args)]
    if args.flavours and not runs:
        parser.error(f"no family has the flavours {args.flavours}")
    progress = Progress(sum(len(family_shapes(FAMILIES[f], args, device)) for f, _ in runs)
                        * len(args.modes) * len(provs))
    written, every_row = [], []
    for family_name, flavour in runs:
        rows = run_family(family_name, flavour, FAMILIES[family_name], args, device, dtype, fmt,
                          provs, meta, progress)
        # The first flavour keeps the family's own file name.
        first = flavour == next(iter(FAMILIES[family_name].FLAVOURS))
        path = write_results(rows, family_name if first else f"{family_name}-{flavour}", device,
                             meta, out)
        if path:
            written.append(path)
            every_row += rows
    if not written:
        return
    print()
    print(summary(every_row))
    print()
    for path in written:
        print(f"wrote {path}.csv, .json")
    if not args.no_plot and any(p in FUSED for p in provs):
        from . import plot

        png = os.path.join(out, f"speedups-{device.type}-{meta['dtype']}-"
                                f"{meta['memory_format']}-{meta['date'][:10]}.png")
        plot.plot([p + ".json" for p in written], png)
        print(f"wrote {png}")


def unavailable(provs, device, program="python -m bench",
                without="--providers eager compile") -> str:
    """Why a fused provider asked for (by default: each one of the device)
    cannot run, with the command that fixes it; empty when all can. The
    benchmark never measures less than it says."""
    why = {p: attnkernels.available_backends()[p] for p in provs if p in FUSED}
    why = {p: w for p, w in why.items() if w is not None}
    wrong_device = [p for p in provs if p in FUSED and (p == "cpu") != (device.type == "cpu")
                    and not (p == "triton" and device.type == "cpu")]
    if not why and not wrong_device:
        return ""
    names = sorted(set(why) | set(wrong_device))
    lines = [f"{program}: the fused backend{'s' * (len(names) > 1)} {', '.join(names)} "
             f"cannot run on {device} here:"]
    lines += [f"  {p}: {w}" for p, w in why.items()]
    lines += [f"  {p}: runs on {'the CPU' if p == 'cpu' else 'a CUDA device'}, not {device}"
              for p in wrong_device]
    from attnkernels._core import extension as _extension

    fixes = []
    if _extension.advice():
        fixes.append(_extension.advice())
    if "cuda" in why and _extension.load():
        fixes.append("The CUDA kernels are built when torch has CUDA and nvcc is found: "
                     "`CUDA_HOME=/path/to/cuda pip install -e .` (`python -m attnkernels --info` "
                     "shows what was built).")
    if "triton" in why and device.type == "cpu":
        fixes.append("Triton runs on the CPU only in its interpreter (TRITON_INTERPRET=1), far "
                     "too slow to time.")
    elif "triton" in why:
        fixes.append("Install Triton: `pip install triton`.")
    lines += fixes + [f"Or time without the fused kernels: {without}."]
    return "\n".join(lines)


def summary(rows) -> str:
    """Per case: the fused providers' median time, speedups over eager and
    torch.compile, the time as a multiple of out.copy_(x) (1 = one read and one
    write of x) and, forward, of the family's floor (its FORWARD_PASSES over x:
    1.00 = at the floor)."""
    fused = [p for p in FUSED if any(r["provider"] == p for r in rows)]
    cells = {(r["family"], r["flavour"], r["shape_name"], r["mode"], r["provider"]): r
             for r in rows}
    cases = list(dict.fromkeys(k[:4] for k in cells))
    head = f"{'module':22s} {'shape':16s} {'mode':8s} {'eager ms':>9s} {'compile ms':>10s}"
    for p in fused:
        head += (f" {p + ' ms':>9s} {'vs eager':>8s} {'vs comp.':>8s} {'x copy_':>7s}"
                 f" {'x floor':>7s}")
    lines = [head]
    for case in cases:
        ms = {p: cells[case + (p,)]["median_ms"] for p in ("eager", "compile", *fused)
              if case + (p,) in cells}
        line = (f"{case[0] + '/' + case[1]:22s} {case[2]:16s} {case[3]:8s} "
                f"{_ms(ms.get('eager')):>9s} {_ms(ms.get('compile')):>10s}")
        for p in fused:
            if p not in ms:
                line += f" {'-':>9s} {'-':>8s} {'-':>8s} {'-':>7s} {'-':>7s}"
                continue
            row = cells[case + (p,)]
            line += (f" {_ms(ms[p]):>9s} {_times(ms.get('eager'), ms[p]):>8s}"
                     f" {_times(ms.get('compile'), ms[p]):>8s}"
                     f" {row['ratio_to_copy']:>7.2f} {_over_floor(row):>7s}")
        lines.append(line)
    return "\n".join(lines)


def _over_floor(row) -> str:
    """The forward's time over its floor: FORWARD_PASSES passes over x, at
    out.copy_(x)'s two passes' speed ("-" in other modes or with no floor)."""
    passes = row.get("forward_floor_passes")
    if row["mode"] != "forward" or not passes:
        return "-"
    return f"{row['ratio_to_copy'] / (passes / 2):.2f}"


def _ms(v):
    return "-" if v is None else f"{v:.3g}"


def _times(base, v):
    return "-" if base is None else f"{base / v:.2f}x"


class Progress:
    """A progress bar on each case's line: cases done of the whole run, time
    elapsed and an estimate of the time left."""

    def __init__(self, total: int):
        self.total, self.done, self.start = max(total, 1), 0, time.monotonic()

    def step(self) -> str:
        self.done += 1
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done)
        filled = round(20 * self.done / self.total)
        return (f"[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} "
                f"{elapsed:.0f}s, ~{left:.0f}s left")


def family_flavours(family, args):
    """The flavour groups to run: those named by --flavours, else the main one (--full: every one)."""
    names = list(family.FLAVOURS)
    if args.flavours:
        return [n for n in names if n in args.flavours]
    return names if args.full else names[:1]


def family_shapes(family, args, device):
    shapes = family.SHAPES + (family.GPU_SHAPES if device.type == "cuda" else [])
    shapes = [s for s in shapes if s[0] in args.shapes] if args.shapes else shapes
    if args.batches:
        shapes = [(f"{name}-b{n}", (n, *shape[1:])) for name, shape in shapes for n in args.batches]
    return shapes


def run_family(family_name, flavour, family, args, device, dtype, fmt, provs, meta, progress):
    rows = []
    for shape_name, shape in family_shapes(family, args, device):
        torch.manual_seed(0)
        x = torch.randn(shape, device=device, dtype=dtype).to(memory_format=fmt)
        out = torch.empty_like(x)  # out.copy_(x)'s, mapped once: no page faults in its time
        fused = family.FLAVOURS[flavour](shape[1]).to(device, dtype)
        for mode in args.modes:
            for prov in provs:
                module = build(prov, fused)
                # The copy baselines are timed right before each case: on a shared
                # machine, memory bandwidth drifts between cases.
                copy = measure(lambda: out.copy_(x), device, budget_s=args.budget)
                clone = measure(lambda: x.clone(), device, budget_s=args.budget)
                res = measure(run_case(module, x, mode), device, budget_s=args.budget)
                if prov == "compile":
                    quiet_compiler()
                row = {"family": family_name, "flavour": flavour, "shape_name": shape_name,
                       "shape": "x".join(map(str, shape)), "mode": mode, "provider": prov, **res,
                       "clone_ms": clone["median_ms"],
                       "ratio_to_clone": res["median_ms"] / clone["median_ms"],
                       "copy_ms": copy["median_ms"],
                       "ratio_to_copy": res["median_ms"] / copy["median_ms"],
                       "forward_floor_passes": getattr(family, "FORWARD_PASSES", None),
                       "x_gb_per_s": x.numel() * x.element_size() / res["median_ms"] / 1e6, **meta}
                rows.append(row)
                print(f"{progress.step()}  {family_name + '/' + flavour:22s} {shape_name:16s} "
                      f"{mode:8s} {prov:8s} "
                      f"{res['median_ms']:9.3f} ms  ({row['ratio_to_copy']:.2f}x copy_, "
                      f"{row['ratio_to_clone']:.2f}x clone"
                      + _peak(res) + ")",
                      flush=True)
    return rows


def write_results(rows, family_name, device, meta, out):
    """Writes <out>/<family>-<device>-<dtype>-<layout>-<date>.csv and .json;
    returns that path without its suffix (None when there is nothing to write)."""
    if not rows:
        return None
    os.makedirs(out, exist_ok=True)
    stem = f"{family_name}-{device.type}-{meta['dtype']}-{meta['memory_format']}-{meta['date'][:10]}"
    path = os.path.join(out, stem)
    with open(path + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(path + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    return path


def _peak(res):
    return "" if res["peak_mb"] != res["peak_mb"] else f", peak {res['peak_mb']:.1f} MB"


def _version(pkg):
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # noqa: BLE001
        return ""


if __name__ == "__main__":
    main()
