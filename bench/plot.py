"""PNG plots from benchmark results: ``python -m bench.plot bench/results/*-cpu-*.json --out FILE.png``.

One row per result file (a family), three panels: the fused provider's
speedup over eager and over torch.compile per shape, forward and
forward+backward (log scale; above 1 is faster), and its share of copy
bandwidth (``x.clone()`` time over its time: 1 would be as fast as a copy)."""
import argparse
import json
import os
from typing import Dict, List

FUSED = ("cuda", "triton", "cpu")  # the first one present in a file is plotted
MODES = ("forward", "fwd+bwd")


def _fused_provider(rows: List[Dict]) -> str:
    present = {r["provider"] for r in rows}
    return next(p for p in FUSED if p in present)


def speedups(rows: List[Dict], mode: str, baseline: str) -> Dict[str, float]:
    """shape -> baseline time / fused time, for one mode."""
    fused = _fused_provider(rows)
    cells = {(r["shape"], r["provider"]): r["median_ms"] for r in rows if r["mode"] == mode}
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    return {s: cells[(s, baseline)] / cells[(s, fused)] for s in shapes
            if (s, baseline) in cells and (s, fused) in cells}


def copy_share(rows: List[Dict], mode: str) -> Dict[str, float]:
    fused = _fused_provider(rows)
    return {r["shape"]: 1.0 / r["ratio_to_clone"] for r in rows
            if r["mode"] == mode and r["provider"] == fused}


def plot(paths: List[str], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    files = [json.load(open(p)) for p in paths]
    fig, axes = plt.subplots(len(files), 3, figsize=(15, 3.2 * len(files)), squeeze=False)
    for row_axes, rows in zip(axes, files):
        meta = rows[0]
        fused = _fused_provider(rows)
        shapes = list(dict.fromkeys(r["shape"] for r in rows))
        xs = range(len(shapes))
        for ax, mode in zip(row_axes[:2], MODES):
            for i, (baseline, colour) in enumerate((("eager", "tab:blue"),
                                                     ("compile", "tab:orange"))):
                s = speedups(rows, mode, baseline)
                ax.bar([x + (i - 0.5) * 0.4 for x in xs], [s.get(sh, 0) for sh in shapes], 0.4,
                       label=f"vs {baseline}", color=colour)
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            label = FuncFormatter(lambda v, _: f"{v:g}x")
            ax.yaxis.set_major_formatter(label)
            ax.yaxis.set_minor_formatter(label)
            ax.tick_params(axis="y", which="both", labelsize=7)
            ax.set_title(f"{meta['family']} {meta.get('flavour', '')} {mode}: {fused} speedup")
            ax.set_xticks(list(xs), shapes, rotation=20, fontsize=7)
            ax.legend(fontsize=7)
        ax = row_axes[2]
        for i, mode in enumerate(MODES):
            c = copy_share(rows, mode)
            ax.bar([x + (i - 0.5) * 0.4 for x in xs], [c.get(sh, 0) for sh in shapes], 0.4,
                   label=mode)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{meta['family']} {meta.get('flavour', '')}: share of copy bandwidth "
                     f"(clone / {fused})")
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
