import atexit
import os
import shutil
import sys
import tempfile

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
