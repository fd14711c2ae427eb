import os
import sys

import pytest
import torch

# The benchmark package (bench/, with the real networks) lives in the checkout.
# Appended, not prepended: attnkernels must still come from the installed package.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Without a GPU, Triton kernels run in the interpreter; the variable must be set
# before triton.jit decorates anything.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
