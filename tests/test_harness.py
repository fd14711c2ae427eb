"""The oracle comparison (utils.assert_matches_oracle) can fail: an output off
by 1e-3 relative in float32 or 2e-2 in bfloat16, a zeroed output, or one whose
small elements alone are wrong is caught, while eager's own rounding passes."""
import pytest
import torch

from attnkernels import nn as fnn

from utils import assert_matches_oracle, run_module


def _outputs(dtype):
    """(eager result in dtype, float64 oracle) for the y and dx of an SE module."""
    torch.manual_seed(0)
    m = fnn.SEModule(32)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)
    x = torch.randn(2, 32, 9, 7, dtype=torch.float64).to(dtype).double()
    dy = torch.randn_like(x).to(dtype).double()
    y_o, dx_o, _ = run_module(m.reference_module().double(), x, dy)
    y_e, dx_e, _ = run_module(m.reference_module().to(dtype), x.to(dtype), dy.to(dtype))
    return {"y": (y_e, y_o), "dx": (dx_e, dx_o)}


@pytest.mark.parametrize("dtype,relative", [(torch.float32, 1e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("name", ["y", "dx"])
def test_a_perturbed_or_zeroed_output_fails_and_eager_passes(dtype, relative, name):
    eager, oracle = _outputs(dtype)[name]
    assert_matches_oracle(eager, eager, oracle, name)  # eager's own rounding passes
    wrong = {"perturbed": (oracle * (1 + relative)).to(dtype), "zeroed": torch.zeros_like(eager)}
    for what, fused in wrong.items():
        with pytest.raises(AssertionError):
            assert_matches_oracle(fused, eager, oracle, f"{name} {what}")


def test_wrong_small_elements_fail_beside_large_ones():
    """Half the channels at 1/100 of the others' scale, and only they are wrong
    (float32: in bfloat16, 1/100 of the scale is within two roundings of the
    large elements, and an absolute budget cannot tell)."""
    dtype = torch.float32
    eager, oracle = _outputs(dtype)["y"]
    small = torch.zeros_like(oracle, dtype=torch.bool)
    small[:, ::2] = True
    oracle = torch.where(small, oracle / 100, oracle)
    eager = oracle.to(dtype)
    fused = torch.where(small, torch.zeros_like(oracle), oracle).to(dtype)
    with pytest.raises(AssertionError):
        assert_matches_oracle(fused, eager, oracle, "y")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_far_off_eager_does_not_open_the_budget(dtype):
    """CAP: however wrong eager is, the bound stays a small fraction of the scale."""
    eager, oracle = _outputs(dtype)["dx"]
    wrong = (oracle * 1.2).to(dtype)
    with pytest.raises(AssertionError):
        assert_matches_oracle(wrong, wrong, oracle, "dx")


def test_a_nudged_budget_needs_its_reason():
    eager, oracle = _outputs(torch.float32)["y"]
    with pytest.raises(AssertionError, match="needs its reason"):
        assert_matches_oracle(eager, eager, oracle, "y", eager_nudged=eager)


def test_nan_must_land_where_the_oracle_has_it():
    """An oracle with NaN (upstream's own, as SimAM's 1x1 map): the fused result
    must be NaN at exactly those places, and is compared elsewhere."""
    eager, oracle = _outputs(torch.float32)["y"]
    oracle = oracle.clone()
    oracle[0, 0] = float("nan")
    eager = oracle.float()
    assert_matches_oracle(eager, eager, oracle, "y")
    finite = eager.clone()
    finite[0, 0] = 0.0
    extra = eager.clone()
    extra[1, 1, 0, 0] = float("nan")
    off = eager.clone()
    off[1] *= 1.01
    for what, fused in {"finite": finite, "extra NaN": extra, "off elsewhere": off}.items():
        with pytest.raises(AssertionError):
            assert_matches_oracle(fused, eager, oracle, f"y {what}")
