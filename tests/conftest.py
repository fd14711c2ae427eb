import os

import pytest
import torch

# Without a GPU, Triton kernels run in the interpreter; the variable must be set
# before triton.jit decorates anything.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
