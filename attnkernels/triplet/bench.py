"""Triplet Attention benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """The official TripletAttention() (three branches, 7x7, BatchNorm in training
    mode for fwd+bwd, as the targets ask). Its parameters do not depend on C."""
    return fnn.TripletAttention()


# The fused forward's floor in passes over x (docs/design.md):
# three Z-pools in one read, apply read, write.
# python -m bench reports the forward against it (3 passes = 1.5x out.copy_(x)).
FORWARD_PASSES = 3

# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "official": make_module,
    "no-spatial": lambda c: fnn.TripletAttention(no_spatial=True),  # two branches
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    N, C, H, W = x.shape
    s_hw, s_cw, s_hc = rand(N, H, W), rand(N, C, W), rand(N, C, H)
    tp = ops.triplet_pool(x)
    tr = ops.triplet_backward_reduce(dy, x, tp[1], tp[3], tp[5])
    return {
        "triplet_pool": (lambda: ops.triplet_pool(x), 1),
        "triplet_apply": (lambda: ops.triplet_apply(x, s_hw, s_cw, s_hc, True), 1),
        "triplet_backward_reduce": (
            lambda: ops.triplet_backward_reduce(dy, x, tp[1], tp[3], tp[5]), 2),
        "triplet_backward_apply": (lambda: ops.triplet_backward_apply(
            dy, s_hw, s_cw, s_hc, True, tr[3], s_hw, s_hw, tr[4], s_cw, s_cw, tr[5], s_hc, s_hc), 1),
    }
