"""The README as a new user runs it, from the repository root: every Python
block executes as written, `python -m bench --quick` times the fused kernels
and draws its plot, `python -m attnkernels --info` says what was built."""
import csv
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def python_blocks():
    text = open(README).read()
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def _run(args, **kwargs):
    # from the root, as typed there: its attnkernels/ is the package imported
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          **kwargs)


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs_as_written(index):
    pytest.importorskip("timm")
    block = python_blocks()[index]
    out = _run(["-c", block], timeout=600)
    assert out.returncode == 0, f"README block {index}:\n{block}\n{out.stderr[-4000:]}"
    assert "could not be loaded" not in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
def test_bench_quick_from_the_root_times_the_fused_kernels_and_plots(tmp_path):
    """The README's benchmark command, --quick: every family has rows of the
    device's fused backend (not only eager and compile), and a PNG is written."""
    pytest.importorskip("matplotlib")
    import attnkernels
    from attnkernels.families import FAMILIES

    if attnkernels.available_backends()["cpu"] is not None:
        pytest.fail("the C++ kernels do not load: " + attnkernels.available_backends()["cpu"])
    out = _run(["-m", "bench", "--quick", "--device", "cpu", "--out", str(tmp_path)],
               timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    files = sorted(glob.glob(str(tmp_path / "*.csv")))
    families = {os.path.basename(f).split("-")[0] for f in files}
    assert families == {f.name for f in FAMILIES}, files
    for f in files:
        providers = {r["provider"] for r in csv.DictReader(open(f))}
        assert providers == {"eager", "compile", "cpu"}, (f, providers)
    (png,) = glob.glob(str(tmp_path / "speedups-cpu-float32-nchw-*.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "cpu ms" in out.stdout and f"wrote {png}" in out.stdout  # the summary and the paths


@pytest.mark.skipif(bool(os.environ.get("ATTNKERNELS_EXTENSION")),
                    reason="another build of the ops is loaded (ATTNKERNELS_EXTENSION)")
def test_info_says_what_was_built():
    out = _run(["-m", "attnkernels", "--info"], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CPU kernels: yes" in out.stdout, out.stdout
    assert re.search(r"CUDA kernels: (yes, for architectures [0-9.;+a-z]+|no \()", out.stdout)
    assert re.search(r"^  cpu +runs here$", out.stdout, re.MULTILINE), out.stdout


def _source_tree_without_build(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "attnkernels"), src / "attnkernels",
                    ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    return src


def test_the_import_warning_names_a_shadowing_source_tree(tmp_path):
    """A source tree without a build, first on sys.path, in front of an installed
    attnkernels: the warning says so and what to run, at the user's line."""
    src = _source_tree_without_build(tmp_path)
    site = tmp_path / "site"  # an installed copy, as pip's RECORD lists it
    (site / "attnkernels").mkdir(parents=True)
    so = "_C.cpython-311-x86_64-linux-gnu.so"
    (site / "attnkernels" / so).write_bytes(b"")
    info = site / "attnkernels-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: attnkernels\nVersion: 0.1.0\n")
    (info / "RECORD").write_text(f"attnkernels/{so},,\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("ATTNKERNELS_EXTENSION", None)
    out = subprocess.run([sys.executable, "-c", "import attnkernels"], cwd=src, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.startswith("<string>:1: RuntimeWarning"), out.stderr  # the user's line
    assert f"the source tree at {src / 'attnkernels'}" in out.stderr
    assert f"shadows the installed package at {site / 'attnkernels'}" in out.stderr
    assert "pip install -e ." in out.stderr and "circular import" not in out.stderr


def test_the_import_warning_without_any_build(tmp_path):
    src = _source_tree_without_build(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ATTNKERNELS_EXTENSION")}
    code = "import attnkernels; print(attnkernels.available_backends()['cpu'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=src, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no compiled extension (_C*.so)" in out.stdout
    assert "pip install -e ." in out.stderr and "circular import" not in out.stderr, out.stderr
