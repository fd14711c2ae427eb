"""Where a fused module's GPU time goes: ``python -m bench.kernels [--modules ...] [--shape 64 256 56 56]``.

For each family's first flavour on each GPU backend (cuda, triton), the
forward (no autograd) and forward+backward under the PyTorch profiler: every
kernel's GPU time per call, its share, and its time over ``x.clone()``'s (the
copy floor of one read and one write of x). Tells which pass or launch keeps a
module off its pass count. Prints the tables; ``--out FILE`` also writes them."""
import argparse

import torch

import attnkernels

from .__main__ import DTYPES, FAMILIES, run_case


def kernel_table(fn, calls: int = 5):
    """[(kernel name, microseconds per call, launches per call)] of ``fn`` on the
    GPU, largest first."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    rows = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            t, n = rows.get(e.name, (0.0, 0))
            rows[e.name] = (t + e.device_time / calls, n + 1)
    return sorted(((k, t, n / calls) for k, (t, n) in rows.items()), key=lambda r: -r[1])


def clone_us(x, calls: int = 20) -> float:
    table = kernel_table(lambda: x.clone(), calls)
    return sum(t for _, t, _ in table)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="*", choices=sorted(FAMILIES), default=sorted(FAMILIES))
    parser.add_argument("--shape", nargs=4, type=int, default=[64, 256, 56, 56])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--backends", nargs="*", default=["cuda", "triton"])
    parser.add_argument("--modes", nargs="*", default=["forward", "fwd+bwd"])
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    lines = [f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | "
             f"{args.dtype} {'x'.join(map(str, args.shape))}"]
    x = torch.randn(args.shape, device="cuda", dtype=DTYPES[args.dtype])
    floor = clone_us(x)
    lines.append(f"x.clone(): {floor:.1f} us")
    for family in args.modules:
        flavour = next(iter(FAMILIES[family].FLAVOURS))
        for backend in args.backends:
            if attnkernels.available_backends()[backend] is not None:
                continue
            m = FAMILIES[family].FLAVOURS[flavour](args.shape[1]).to("cuda", DTYPES[args.dtype])
            m.backend = backend
            for mode in args.modes:
                table = kernel_table(run_case(m, x, mode))
                total = sum(t for _, t, _ in table)
                launches = sum(n for _, _, n in table)
                lines.append(f"\n## {family}/{flavour} {backend} {mode}: {total:.1f} us of kernels "
                             f"({total / floor:.2f}x clone), {launches:g} launches")
                for name, t, n in table[:args.top]:
                    lines.append(f"{t:9.1f} us {t / floor:6.2f}x {n:4g}x  {name[:100]}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
