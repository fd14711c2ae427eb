"""Shared test helpers: backends on this machine, and the oracle comparison."""
import torch

import attnkernels

EPS = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def fused_backends():
    """(backend, device) pairs this machine can run."""
    avail = attnkernels.available_backends()
    out = []
    if avail["cpu"] is None:
        out.append(("cpu", "cpu"))
    if avail["cuda"] is None:
        out.append(("cuda", "cuda"))
    if avail["triton"] is None:
        out.append(("triton", "cuda" if torch.cuda.is_available() else "cpu"))
    return out


def assert_matches_oracle(fused, eager, oracle, name=""):
    """fused vs the float64 oracle: no worse than twice the eager low-precision
    error (flash-attention's rule) plus a few ulps of the dtype at the output's scale."""
    assert fused.dtype == eager.dtype, (name, fused.dtype, eager.dtype)
    assert fused.shape == oracle.shape, (name, fused.shape, oracle.shape)
    oracle = oracle.double()
    scale = oracle.abs().max().item() if oracle.numel() else 0.0
    err = (fused.double() - oracle).abs().max().item() if oracle.numel() else 0.0
    base = (eager.double() - oracle).abs().max().item() if oracle.numel() else 0.0
    bound = 2 * base + EPS[fused.dtype] * max(scale, 1.0)
    assert err <= bound, f"{name}: error {err:.3g} > bound {bound:.3g} (eager error {base:.3g})"
