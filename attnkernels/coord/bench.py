"""Coordinate Attention benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """The official CoordAtt(inp, oup, reduction=32) (BatchNorm in training mode
    for fwd+bwd, as the targets ask)."""
    return fnn.CoordAtt(channels, channels)


# The fused forward's floor in passes over x (docs/design.md): strip means read, apply read, write.
# python -m bench reports the forward against it (3 passes = 1.5x out.copy_(x)).
FORWARD_PASSES = 3

# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "official": make_module,
    "timm": lambda c: fnn.CoordAttn(c),  # hardswish, BatchNorm, rd from se_factor
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    N, C, H, W = x.shape
    ah, aw = rand(N, C, H), rand(N, C, W)
    return {
        "coord_pool": (lambda: ops.coord_pool(x), 1),
        "coord_apply": (lambda: ops.coord_apply(x, ah, aw, False), 1),
        "coord_backward_reduce": (lambda: ops.coord_backward_reduce(dy, x, ah, aw), 2),
        "coord_backward_apply": (lambda: ops.coord_backward_apply(dy, ah, aw, ah, aw, False), 1),
    }
