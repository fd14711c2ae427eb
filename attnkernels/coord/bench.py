"""Coordinate Attention benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """The official CoordAtt(inp, oup, reduction=32) (BatchNorm in training mode
    for fwd+bwd, as the targets ask)."""
    return fnn.CoordAtt(channels, channels)


# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "official": make_module,
    "timm": lambda c: fnn.CoordAttn(c),  # hardswish, BatchNorm, rd from se_factor
}
