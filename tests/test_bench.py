"""The benchmark runner's code paths on tiny shapes (no timing assertions)."""
import csv

import pytest

import attnkernels

from bench import __main__ as bench_main
from attnkernels.eca import bench as bench_eca
from attnkernels.families import FAMILIES
from attnkernels.se import bench as bench_se


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_bench_writes_rows_for_every_provider_and_mode(family, tmp_path, monkeypatch):
    for f in FAMILIES:
        monkeypatch.setattr(f.bench, "SHAPES", [("tiny", (2, 16, 5, 5))])
    providers = ["eager"] + [p for p in bench_main.providers(bench_main.torch.device("cpu"))
                             if p not in ("eager", "compile")] + ["copy"]
    modes = ("forward", "backward", "fwd+bwd")
    bench_main.main(["--modules", family, "--device", "cpu", "--budget", "0.01", "--full",
                     "--providers", *providers, "--modes", *modes, "--out", str(tmp_path),
                     "--no-plot"])
    flavours = list(bench_main.FAMILIES[family].FLAVOURS)
    files = {p.name: p for p in tmp_path.iterdir() if p.suffix == ".csv"}
    assert len(files) == len(flavours)
    for i, flavour in enumerate(flavours):
        # The first flavour keeps the family's own file name.
        stem = family if i == 0 else f"{family}-{flavour}"
        (path,) = [p for n, p in files.items() if n.startswith(f"{stem}-cpu-float32-nchw-2")]
        rows = list(csv.DictReader(open(path)))
        assert {(r["provider"], r["mode"]) for r in rows} == {
            (p, m) for p in providers for m in modes}
        for r in rows:
            assert r["family"] == family and r["flavour"] == flavour and r["shape"] == "2x16x5x5"
            assert float(r["median_ms"]) > 0 and float(r["ratio_to_clone"]) > 0
            assert float(r["ratio_to_copy"]) == pytest.approx(
                float(r["median_ms"]) / float(r["copy_ms"]))
            assert r["forward_floor_passes"] == str(getattr(bench_main.FAMILIES[family],
                                                            "FORWARD_PASSES", ""))
            assert float(r["peak_mb"]) >= 0  # measured on the CPU too (profiler memory events)
            assert r["device"] and r["torch"] and r["date"]
            assert r["command"].startswith("python -m bench")


def test_summary_reports_the_forward_against_the_floor():
    """x copy_ is the time over out.copy_(x)'s; x floor, forward only, over the
    family's FORWARD_PASSES at copy_'s two passes' speed."""
    def row(mode, provider, ms, passes):
        return {"family": "cbam", "flavour": "seed", "shape_name": "s", "mode": mode,
                "provider": provider, "median_ms": ms, "ratio_to_copy": ms / 2.0,
                "forward_floor_passes": passes}

    rows = [row(m, p, ms, 4) for m in ("forward", "fwd+bwd")
            for p, ms in (("eager", 12.0), ("compile", 10.0), ("cpu", 5.0))]
    fwd, train = bench_main.summary(rows).splitlines()[1:]
    assert fwd.split()[-4:] == ["2.40x", "2.00x", "2.50", "1.25"]  # 5 ms / (4 passes * 1 ms)
    assert train.split()[-4:] == ["2.40x", "2.00x", "2.50", "-"]
    no_floor = bench_main.summary([row("forward", "cpu", 5.0, None)]).splitlines()[1]
    assert no_floor.split()[-1] == "-"


def test_compare_flags_regressions_beyond_the_threshold(tmp_path, capsys):
    from bench import compare

    def row(provider, ms, ratio):
        return {"family": "se", "flavour": "timm", "shape": "2x16x5x5", "mode": "forward",
                "provider": provider,
                "median_ms": ms, "ratio_to_clone": ratio}

    old = [row("cpu", 1.0, 1.0), row("eager", 2.0, 2.0)]
    new = [row("cpu", 1.5, 1.2), row("eager", 2.0, 2.1), {**row("triton", 1.0, 1.0)}]
    (tmp_path / "old.json").write_text(__import__("json").dumps(old))
    (tmp_path / "new.json").write_text(__import__("json").dumps(new))
    status = compare.main([str(tmp_path / "old.json"), str(tmp_path / "new.json"),
                           "--threshold", "0.1"])
    out = capsys.readouterr().out
    assert status == 1
    assert "| se | timm | 2x16x5x5 | forward | cpu | 1 (1.00x) | 1.5 (1.20x) | +20.0% **regressed** |" in out
    assert "| eager |" in out and "+5.0% |" in out  # within the threshold: not flagged
    assert "1 case(s) in one file only" in out and "1 of 2 case(s) regressed" in out
    assert compare.main([str(tmp_path / "old.json"), str(tmp_path / "old.json")]) == 0


def test_compare_reads_rows_without_a_flavour_as_the_first(tmp_path, capsys):
    """Files from before the flavour groups measured each family's first flavour."""
    from bench import compare

    row = {"family": "se", "shape": "2x16x5x5", "mode": "forward", "provider": "cpu",
           "median_ms": 1.0, "ratio_to_clone": 1.0}
    (tmp_path / "old.json").write_text(__import__("json").dumps([row]))
    (tmp_path / "new.json").write_text(__import__("json").dumps([{**row, "flavour": "timm"}]))
    assert compare.main([str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 0
    out = capsys.readouterr().out
    assert "| se | timm | 2x16x5x5 | forward | cpu |" in out and "in one file only" not in out


@pytest.mark.skipif(attnkernels.available_backends()["cpu"] is not None,
                    reason="the C++ extension is not built")
@pytest.mark.parametrize("layout", [[], ["--channels-last"]])
def test_passes_times_every_cpu_pass(capsys, layout):
    from bench import passes

    passes.main(["--shape", "2x20x9x11", "--budget", "0.01", *layout])
    out = capsys.readouterr().out
    assert ("channels_last |" in out) == bool(layout)
    for name in ("x.clone", "out.copy_(x)", "se_backward", "cbam_backward_apply", "coord_pool", "triplet_backward_reduce",
                 "triplet_backward_apply", "simam_forward", "simam_backward", "nam_forward_batch",
                 "nam_forward_running", "nam_backward", "ema_forward", "ema_backward",
                 "cot_forward", "cot_backward"):
        assert f"| {name} | " in out
    assert out.count("\n| ") == 1 + 33  # the header, one row per pass


def test_default_run_is_the_main_flavour_on_the_default_shapes(tmp_path, monkeypatch, capsys):
    shapes = [(name, (1, 16, 3, 3)) for name in bench_main.DEFAULT_SHAPES["cpu"]] + [
        ("other", (1, 16, 3, 3))]
    monkeypatch.setattr(bench_se, "SHAPES", shapes)
    bench_main.main(["--modules", "se", "--device", "cpu", "--budget", "0.01", "--out",
                     str(tmp_path), "--providers", "eager", "cpu"])
    (path,) = [p for p in tmp_path.iterdir() if p.suffix == ".csv"]
    rows = list(csv.DictReader(open(path)))
    assert {r["flavour"] for r in rows} == {next(iter(bench_se.FLAVOURS))}
    assert [r["shape_name"] for r in rows if r["mode"] == "forward" and r["provider"] == "cpu"] \
        == bench_main.DEFAULT_SHAPES["cpu"]
    out = capsys.readouterr().out
    (png,) = [p for p in tmp_path.iterdir() if p.suffix == ".png"]
    assert f"wrote {png}" in out and "vs eager" in out  # the summary table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("device,fused", [("cpu", "cpu"), ("cuda", "cuda"), ("cuda", "triton")])
def test_a_fused_backend_that_cannot_load_stops_the_run(device, fused, tmp_path, monkeypatch):
    """No silent downgrade: the default providers of a device include its
    fused backends, and one that cannot run stops the run with the reason."""
    real = attnkernels.available_backends()
    monkeypatch.setattr(bench_main.attnkernels, "available_backends",
                        lambda: {**real, fused: "it was not built (for this test)"})
    with pytest.raises(SystemExit) as e:
        bench_main.main(["--modules", "se", "--device", device, "--out", str(tmp_path)])
    assert f"{fused}: it was not built (for this test)" in str(e.value)
    assert "--providers eager compile" in str(e.value)
    assert not list(tmp_path.iterdir())
    with pytest.raises(SystemExit):  # asked for by name, too
        bench_main.main(["--modules", "se", "--device", device, "--providers", "eager", fused,
                         "--out", str(tmp_path)])


def test_model_benchmark_without_a_fused_backend_stops(tmp_path, monkeypatch):
    from bench import models as bench_models

    real = attnkernels.available_backends()
    monkeypatch.setattr(bench_main.attnkernels, "available_backends",
                        lambda: {**real, "cpu": "it was not built (for this test)"})
    with pytest.raises(SystemExit) as e:
        bench_models.main(["--models", "legacy_seresnet18", "--device", "cpu", "--out",
                           str(tmp_path)])
    assert "python -m bench.models: the fused backend cpu" in str(e.value)


def test_quick_runs_only_the_targets_shape(tmp_path, monkeypatch):
    shapes = [("resnet50-stage1", (2, 16, 5, 5)), ("other", (1, 16, 3, 3))]
    monkeypatch.setattr(bench_eca, "SHAPES", shapes)
    bench_main.main(["--modules", "eca", "--device", "cpu", "--quick", "--providers", "eager",
                     "--out", str(tmp_path)])
    (path,) = [p for p in tmp_path.iterdir() if p.suffix == ".csv"]
    rows = list(csv.DictReader(open(path)))
    assert {(r["shape_name"], r["shape"]) for r in rows} == {("resnet50-stage1-b8", "8x16x5x5")}


def test_plot_writes_a_png_from_results(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from bench import plot

    monkeypatch.setattr(bench_se, "SHAPES", [("tiny", (2, 16, 5, 5)), ("tiny2", (1, 16, 3, 3))])
    bench_main.main(["--modules", "se", "--flavours", "timm", "--device", "cpu", "--budget",
                     "0.01", "--providers", "eager", "compile", "cpu", "--out", str(tmp_path),
                     "--full"])
    (path,) = [p for p in tmp_path.iterdir() if p.suffix == ".json"]
    rows = __import__("json").load(open(path))
    s = plot.speedups(rows, "forward", "eager")
    assert set(s) == {"2x16x5x5", "1x16x3x3"} and all(v > 0 for v in s.values())
    out = tmp_path / "plot.png"
    plot.main([str(path), str(path), "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batch_sweep_runs_each_shape_at_each_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_eca, "SHAPES", [("tiny", (2, 16, 5, 5))])
    bench_main.main(["--modules", "eca", "--flavours", "timm", "--device", "cpu", "--budget",
                     "0.01", "--providers", "eager", "--modes", "forward", "--batches", "1", "3",
                     "--out", str(tmp_path), "--full"])
    (path,) = [p for p in tmp_path.iterdir() if p.suffix == ".csv"]
    rows = list(csv.DictReader(open(path)))
    assert [(r["shape_name"], r["shape"]) for r in rows] == [("tiny-b1", "1x16x5x5"),
                                                            ("tiny-b3", "3x16x5x5")]


def test_model_benchmark_every_provider_and_mode(tmp_path, capsys, monkeypatch):
    """The harness, every provider (the one on request too), on a network small
    enough that its five torch.compile builds take seconds (legacy_seresnet18
    took minutes); the real networks convert in test_networks.py and compile
    in test_network_modes.py."""
    import timm
    from torch import nn

    from bench import models as bench_models
    from bench import networks as bench_networks

    monkeypatch.setitem(bench_networks.NETWORKS, "tiny_seresnet", lambda: nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), timm.layers.SEModule(16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1000)))
    bench_models.main(["--models", "tiny_seresnet", "--device", "cpu", "--batch", "2",
                       "--size", "32", "--budget", "0.01", "--out", str(tmp_path),
                       "--providers", *bench_models.PROVIDERS])
    (path,) = [p for p in tmp_path.iterdir() if p.suffix == ".csv"]
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert {(r["mode"], r["provider"]) for r in rows} == {
        (m, p) for m in ("inference", "train") for p in bench_models.PROVIDERS}
    assert all(float(r["images_per_s"]) > 0 and r["device"] and r["date"] for r in rows)
    table = capsys.readouterr().out.split("| model |")[1]
    assert "tiny_seresnet | train" in table


def test_without_attention_strips_every_attention_module():
    from bench import models as bench_models
    from bench.networks import NETWORKS, attention_paths

    model = NETWORKS["triplet_resnet50"]()
    stripped = bench_models.without_attention(model)
    assert attention_paths(model) and not attention_paths(stripped)
    assert len(attention_paths(model)) == sum(
        isinstance(stripped.get_submodule(p), bench_models.torch.nn.Identity)
        for p in attention_paths(model))


def test_copy_attention_writes_output_and_input_gradient():
    from bench import models as bench_models
    from bench.networks import NETWORKS, attention_paths

    model = NETWORKS["coord_resnet50"]()
    copied = bench_models.copy_attention(model)
    paths = attention_paths(model)
    assert paths and not attention_paths(copied)
    assert all(isinstance(copied.get_submodule(p), bench_models.CopyFloor) for p in paths)
    x = bench_models.torch.randn(2, 3, 5, 5, requires_grad=True)
    y = bench_models.CopyFloor()(x)
    assert y.data_ptr() != x.data_ptr() and bench_models.torch.equal(y, x)
    dy = bench_models.torch.randn_like(y)
    (dx,) = bench_models.torch.autograd.grad(y, x, dy)
    assert dx.data_ptr() != dy.data_ptr() and bench_models.torch.equal(dx, dy)


@pytest.mark.parametrize("mode", ["backward", "fwd+bwd"])
def test_cpu_peak_counts_every_call_alike(mode):
    """The copy floor's backward holds y and writes dx (fwd+bwd: y alive through
    it too), so every measured call's peak is at least dx (fwd+bwd: y + dx),
    the second and later calls too, whose start could free the first's gradient."""
    from bench.timing import cpu_peak_mb

    x = bench_main.torch.randn(4, 16, 64, 64)
    fn = bench_main.run_case(bench_main.CopyFloor(), x, mode)
    fn()
    fn()
    floor = (1 if mode == "backward" else 2) * x.nbytes / 2**20
    peaks = [cpu_peak_mb(fn) for _ in range(3)]
    assert min(peaks) >= floor, (peaks, floor)


def test_bench_attention_seeds_runs_every_case(tmp_path):
    """``python -m bench.attention --set seeds`` on tiny shapes (no compile,
    to stay quick): every case converts and is timed in both modes, rows
    for eager and the converted module."""
    import json

    from bench import attention as bench_attention

    bench_attention.main(["--set", "seeds", "--channels", "16", "--side", "4", "--batch", "2",
                          "--modes", "inference", "train", "--providers", "eager", "attnkernels",
                          "--budget", "0.01", "--out", str(tmp_path)])
    (path,) = tmp_path.glob("attention-seeds-*.json")
    data = json.loads(path.read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    seen = {(r["shape_name"], r["mode"], r["provider"]) for r in rows}
    assert seen == {(c, m, p) for c in bench_attention.SEED_CASES for m in ("inference", "train")
                    for p in ("eager", "attnkernels")}
