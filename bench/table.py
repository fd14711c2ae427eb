"""Markdown tables from benchmark results: ``python -m bench.table bench/results/se-cpu-*.json``.

One table per result file: a row per (shape, mode), a column per provider,
each cell the median time in ms and its ratio to ``x.clone()`` of the same run."""
import json
import sys
from typing import Dict, List


def table(rows: List[Dict]) -> str:
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    cells = {(r["shape"], r["mode"], r["provider"]): r for r in rows}
    keys = list(dict.fromkeys((r["shape"], r["mode"]) for r in rows))
    out = ["| shape | mode | " + " | ".join(providers) + " |",
           "|---|---|" + "---|" * len(providers)]
    for shape, mode in keys:
        line = []
        for p in providers:
            r = cells.get((shape, mode, p))
            line.append("–" if r is None else f"{r['median_ms']:.3g} ({r['ratio_to_clone']:.2f}x)")
        out.append(f"| {shape} | {mode} | " + " | ".join(line) + " |")
    return "\n".join(out)


def main(paths: List[str]) -> None:
    for path in paths:
        with open(path) as f:
            rows = json.load(f)
        r = rows[0]
        print(f"{r['family']} {r.get('flavour', '')}: {r['device']}; torch {r['torch']}; {r['dtype']} {r['memory_format']}; "
              f"{r['date'][:10]}; `{r['command']}`\n")
        print(table(rows) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
