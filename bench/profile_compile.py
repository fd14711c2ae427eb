"""Where a converted model's time goes under torch.compile, against the
compiled original: ``python -m bench.profile_compile --model seresnet50
[--mode inference] [--batch 4] [--size 160] [--steps 5]``.

Both models (bench.models.build: the same weights) are compiled, warmed up
and run ``--steps`` times under torch.profiler; inductor's generated CPU
kernels are named in the profile (``cpp.enable_kernel_profile``). Prints each
side's operators by self CPU time and, per name, the difference: what the
converted model runs that the original does not (our ops, and the pointwise
kernels around them that inductor could not fuse) and what it no longer runs.
Writes the two tables as text to ``--out`` when given."""
import argparse
import collections
import re

import torch

from .models import build, step_fn


def profile(fn, steps: int):
    """{op name: (self CPU ms per step, calls per step)} over ``steps`` calls of fn."""
    for _ in range(3):
        fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    out = collections.defaultdict(lambda: [0.0, 0])
    for e in prof.key_averages():
        out[kernel_kind(e.key)][0] += e.self_cpu_time_total / 1000 / steps
        out[kernel_kind(e.key)][1] += e.count / steps
    return dict(out)


def kernel_kind(name: str) -> str:
    """An inductor kernel's name without its graph and serial numbers (what it
    fuses stays), so the two models' kernels of one kind add up and compare."""
    name = re.sub(r"^## Call CompiledFxGraph \w+ ##$", "## Call CompiledFxGraph ##", name)
    return re.sub(r"_\d+$", "", re.sub(r"^graph_\d+_", "", name))


def table(rows, title, limit=25):
    lines = [title, f"{'ms/step':>9} {'calls':>6}  op"]
    for name, (ms, calls) in sorted(rows.items(), key=lambda r: -abs(r[1][0]))[:limit]:
        lines.append(f"{ms:9.2f} {calls:6.0f}  {name[:110]}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="seresnet50")
    parser.add_argument("--mode", choices=("inference", "train"), default="inference")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    torch._inductor.config.cpp.enable_kernel_profile = True
    original, converted, x, target = build(args.model, torch.device("cpu"), torch.float32,
                                           torch.contiguous_format, args.batch, args.size)
    results = {}
    for name, model in (("original-compile", original), ("converted-compile", converted)):
        torch._dynamo.reset()
        results[name] = profile(step_fn(model, torch.compile(model), x, target, args.mode),
                                args.steps)
    a, b = results["original-compile"], results["converted-compile"]
    total = {k: sum(ms for ms, _ in v.values()) for k, v in results.items()}
    diff = {k: (b.get(k, (0.0, 0))[0] - a.get(k, (0.0, 0))[0],
                b.get(k, (0.0, 0))[1] - a.get(k, (0.0, 0))[1]) for k in set(a) | set(b)}
    text = "\n\n".join([
        f"# {args.model} {args.mode} batch {args.batch} at {args.size}x{args.size}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; self CPU ms per step: "
        f"original-compile {total['original-compile']:.1f}, "
        f"converted-compile {total['converted-compile']:.1f}",
        table(a, "## original-compile"), table(b, "## converted-compile"),
        table(diff, "## converted minus original (by op name)", limit=40)])
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
