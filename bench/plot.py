"""PNG plots from benchmark results: ``python -m bench.plot bench/results/*-cpu-*.json --out FILE.png``.

One row per result file (a family and flavour), three panels: each fused
provider's speedup over eager and over torch.compile per shape, forward and
forward+backward (log scale; above 1 is faster), and its share of copy
bandwidth (``x.clone()`` time over its time: 1 would be as fast as a copy)."""
import argparse
import json
import os
from typing import Dict, List

FUSED = ("cuda", "triton", "cpu")
MODES = ("forward", "fwd+bwd")


def fused_providers(rows: List[Dict]) -> List[str]:
    present = {r["provider"] for r in rows}
    return [p for p in FUSED if p in present]


def speedups(rows: List[Dict], mode: str, baseline: str, fused: str = None) -> Dict[str, float]:
    """shape -> baseline time / fused time, for one mode (fused: the first
    fused provider present unless named)."""
    fused = fused or fused_providers(rows)[0]
    cells = {(r["shape"], r["provider"]): r["median_ms"] for r in rows if r["mode"] == mode}
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    return {s: cells[(s, baseline)] / cells[(s, fused)] for s in shapes
            if (s, baseline) in cells and (s, fused) in cells}


def copy_share(rows: List[Dict], mode: str, fused: str) -> Dict[str, float]:
    return {r["shape"]: 1.0 / r["ratio_to_clone"] for r in rows
            if r["mode"] == mode and r["provider"] == fused}


def plot(paths: List[str], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    files = [json.load(open(p)) for p in paths]
    fig, axes = plt.subplots(len(files), 3, figsize=(15, 3.2 * len(files)), squeeze=False)
    label = FuncFormatter(lambda v, _: f"{v:g}x")
    for row_axes, rows in zip(axes, files):
        meta = rows[0]
        fused = fused_providers(rows)
        shapes = list(dict.fromkeys(r["shape"] for r in rows))
        xs = range(len(shapes))
        pairs = [(f, b) for f in fused for b in ("eager", "compile")]
        width = 0.8 / len(pairs)
        for ax, mode in zip(row_axes[:2], MODES):
            for i, (f, baseline) in enumerate(pairs):
                s = speedups(rows, mode, baseline, f)
                ax.bar([x + (i - (len(pairs) - 1) / 2) * width for x in xs],
                       [s.get(sh, 0) for sh in shapes], width, label=f"{f} vs {baseline}")
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(label)
            ax.yaxis.set_minor_formatter(label)
            ax.tick_params(axis="y", which="both", labelsize=7)
            ax.set_title(f"{meta['family']} {meta.get('flavour', '')} {mode}: speedup")
            ax.set_xticks(list(xs), shapes, rotation=20, fontsize=7)
            ax.legend(fontsize=7)
        ax = row_axes[2]
        bars = [(f, m) for f in fused for m in MODES]
        width = 0.8 / len(bars)
        top = 1.05
        for i, (f, mode) in enumerate(bars):
            c = copy_share(rows, mode, f)
            ax.bar([x + (i - (len(bars) - 1) / 2) * width for x in xs],
                   [c.get(sh, 0) for sh in shapes], width, label=f"{f} {mode}")
            top = max([top] + [1.1 * v for v in c.values()])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylim(0, top)  # above 1: faster than x.clone() (its fresh pages cost more)
        ax.set_title(f"{meta['family']} {meta.get('flavour', '')}: share of copy bandwidth "
                     "(clone time / time)")
        ax.set_xticks(list(xs), shapes, rotation=20, fontsize=7)
        ax.legend(fontsize=7)
    meta = files[0][0]
    fig.suptitle(f"{meta['device']}; torch {meta['torch']}; {meta['dtype']} "
                 f"{meta['memory_format']}; {meta['date'][:10]}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="result JSON files (one row of plots each)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    plot(args.paths, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
