import atexit
import os
import random
import shutil
import sys
import tempfile

import pytest

# OpenMP threads sleep at once when idle instead of spinning: the tests run in
# several processes (pytest-xdist) with two threads each, and spinning threads
# of one process took the cores from the others (the CPU parity files took
# 146 s with spinning, 84 s without, -n 2 on 2 cores). Read when torch loads
# libgomp, so before the import; inherited by the workers and subprocesses.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

# The benchmark package (bench/, with the real networks) lives in the checkout.
# Appended, not prepended: attnkernels must still come from the installed package.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A fresh inductor cache per test session: a cached compiled graph from an
# earlier build of attnkernels (another output list of an op) is served again
# for the same graph and fails its output checks. Set the variable to reuse one.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="attnkernels-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], True)

# Without a GPU, Triton kernels run in the interpreter; the variable must be set
# before triton.jit decorates anything.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The fuzz tests' seed: a fresh one each run unless given (set here, before
# pytest-xdist starts its workers, so that every worker draws the same cases).
os.environ.setdefault("ATTNKERNELS_FUZZ_SEED", str(random.SystemRandom().randrange(2 ** 32)))


# Under pytest-xdist (the README's `-n auto`), each worker's torch gets its share
# of the cores, at least 2 so the CPU kernels still split their work across
# threads (2 workers x 2 threads on CI's 2 cores, as before); OMP_NUM_THREADS wins.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(min(torch.get_num_threads(), max(2, (os.cpu_count() or 2) // _workers)))


def _fuzz_seed_line() -> str:
    seed = os.environ["ATTNKERNELS_FUZZ_SEED"]
    return f"fuzz seed: {seed} (ATTNKERNELS_FUZZ_SEED={seed} replays this run's fuzz cases)"


def pytest_report_header():
    return _fuzz_seed_line()


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(_fuzz_seed_line())  # also under -q, which hides the header


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
