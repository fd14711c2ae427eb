"""The benchmark runner's code paths on tiny shapes (no timing assertions)."""
import csv
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import __main__ as bench_main  # noqa: E402
from bench import cbam as bench_cbam  # noqa: E402
from bench import coord as bench_coord  # noqa: E402
from bench import eca as bench_eca  # noqa: E402
from bench import se as bench_se  # noqa: E402


@pytest.mark.parametrize("family", ["se", "eca", "cbam", "coord"])
def test_bench_writes_rows_for_every_provider_and_mode(family, tmp_path, monkeypatch):
    tiny = [("tiny", (2, 16, 5, 5))]
    monkeypatch.setattr(bench_se, "SHAPES", tiny)
    monkeypatch.setattr(bench_eca, "SHAPES", tiny)
    monkeypatch.setattr(bench_cbam, "SHAPES", tiny)
    monkeypatch.setattr(bench_coord, "SHAPES", tiny)
    providers = ["eager"] + [p for p in bench_main.providers(bench_main.torch.device("cpu"))
                             if p not in ("eager", "compile")]
    bench_main.main(["--modules", family, "--device", "cpu", "--budget", "0.01",
                     "--providers", *providers, "--out", str(tmp_path)])
    (path,) = [p for p in tmp_path.iterdir() if p.suffix == ".csv"]
    assert path.name.startswith(f"{family}-cpu-float32-nchw-")
    rows = list(csv.DictReader(open(path)))
    assert {(r["provider"], r["mode"]) for r in rows} == {
        (p, m) for p in providers for m in ("forward", "fwd+bwd")}
    for r in rows:
        assert r["family"] == family and r["shape"] == "2x16x5x5"
        assert float(r["median_ms"]) > 0 and float(r["ratio_to_clone"]) > 0
        assert float(r["peak_mb"]) >= 0  # measured on the CPU too (profiler memory events)
        assert r["device"] and r["torch"] and r["date"] and r["command"].startswith("python -m bench")
