"""Two benchmark result files side by side: ``python -m bench.compare OLD.json NEW.json``.

Rows are matched on (family, flavour, shape, mode, provider). A case regresses when its
ratio to ``x.clone()`` (timed in the same run, so machine drift cancels)
grows by more than ``--threshold`` (default 10%). Prints a markdown table and
exits with status 1 when anything regressed, so it can gate a release.
"""
import argparse
import json
import sys
from typing import Dict, List, Tuple

Key = Tuple[str, str, str, str, str]


def flavour(row: dict) -> str:
    """The row's flavour group. Files written before flavour groups existed have
    none, and measured each family's first (the one that keeps the bare file name)."""
    if row.get("flavour"):
        return row["flavour"]
    from attnkernels.families import FAMILIES

    cases = {f.name: f.bench for f in FAMILIES}.get(row["family"])
    return next(iter(cases.FLAVOURS), "") if cases is not None else ""


def load(path: str) -> Dict[Key, dict]:
    with open(path) as f:
        rows = json.load(f)
    return {(r["family"], flavour(r), r["shape"], r["mode"], r["provider"]): r for r in rows}


def compare(old: Dict[Key, dict], new: Dict[Key, dict], threshold: float) -> List[dict]:
    """One entry per case present in both files, with its change and verdict."""
    out = []
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        change = b["ratio_to_clone"] / a["ratio_to_clone"] - 1.0
        out.append({"key": key, "old_ms": a["median_ms"], "new_ms": b["median_ms"],
                    "old_ratio": a["ratio_to_clone"], "new_ratio": b["ratio_to_clone"],
                    "change": change, "regressed": change > threshold})
    return out


def table(entries: List[dict]) -> str:
    lines = ["| family | flavour | shape | mode | provider | old ms (x clone) | new ms (x clone) "
             "| change |", "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        family, flavour, shape, mode, provider = e["key"]
        flag = " **regressed**" if e["regressed"] else ""
        lines.append(f"| {family} | {flavour} | {shape} | {mode} | {provider} | "
                     f"{e['old_ms']:.3g} ({e['old_ratio']:.2f}x) | "
                     f"{e['new_ms']:.3g} ({e['new_ratio']:.2f}x) | {e['change']:+.1%}{flag} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--threshold", type=float, default=0.10,
                        help="relative growth of the ratio to clone that counts as a regression")
    args = parser.parse_args(argv)
    old, new = load(args.old), load(args.new)
    entries = compare(old, new, args.threshold)
    print(table(entries))
    only = sorted((old.keys() ^ new.keys()))
    if only:
        print(f"\n{len(only)} case(s) in one file only: " + ", ".join("/".join(k) for k in only))
    regressed = [e for e in entries if e["regressed"]]
    print(f"\n{len(regressed)} of {len(entries)} case(s) regressed by more than {args.threshold:.0%}")
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
