"""Every family under torch.use_deterministic_algorithms(True): no error, and
repeated runs bitwise equal (forward and every gradient), on every backend here."""
import pytest
import torch

from test_fuzz import FLAVOURS
from utils import assert_same_runs, fused_backends, run_module


@pytest.mark.parametrize("backend,device", fused_backends())
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_deterministic_algorithms(backend, device, flavour):
    torch.manual_seed(0)
    m = FLAVOURS[flavour](8).to(device)
    m.backend = backend
    x = torch.randn(2, 8, 5, 6, device=device)
    dy = torch.randn_like(x)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert_same_runs([run_module(m, x, dy) for _ in range(2)])
    finally:
        torch.use_deterministic_algorithms(before)
