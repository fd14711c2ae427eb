"""EMA benchmark: shapes from real networks, every provider."""
import math

import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def _drawn(m: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The GroupNorm's affine drawn at random (a fresh one's zero bias makes
    the cross-spatial softmax over it uniform)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.gn.weight.copy_(torch.rand(m.gn.weight.shape, generator=g) + 0.5)
        m.gn.bias.copy_(torch.randn(m.gn.bias.shape, generator=g) * 0.5)
    return m


def make_module(channels: int) -> torch.nn.Module:
    """The official EMA with the factor the YOLO codebases use, 8 (groups of
    C / 8 channels; a smaller one where 8 does not divide C)."""
    return _drawn(fnn.EMA(channels, factor=math.gcd(channels, 8)), channels)


def make_official(channels: int) -> torch.nn.Module:
    """The official EMA with its default factor 32 (small groups)."""
    return _drawn(fnn.EMA(channels, factor=math.gcd(channels, 32)), channels)


# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "factor8": make_module,
    "factor32": make_official,
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    B, C, H, W = x.shape
    groups = math.gcd(C, 8)
    g = C // groups
    x2 = rand(B * groups, g, H, W)
    w1, b1, gw, gb = rand(g, g, 1, 1), rand(g), rand(g), rand(g)
    _, strips, gates, stats, s = ops.ema_forward(x, x2, w1, b1, gw, gb, groups, 1e-5)
    return {
        "ema_forward": (lambda: ops.ema_forward(x, x2, w1, b1, gw, gb, groups, 1e-5), 2),
        "ema_backward": (lambda: ops.ema_backward(dy, x, x2, w1, gw, gb, strips, gates, stats, s,
                                                  groups), 3),
    }
