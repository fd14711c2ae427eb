"""Squeeze-and-Excitation benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """timm's SEModule (ReLU, sigmoid, rd_ratio 1/16): the module ResNet-style nets carry."""
    return fnn.SEModule(channels)


# The fused forward's floor in passes over x (docs/design.md): mean read, apply read, write.
# python -m bench reports the forward against it (3 passes = 1.5x out.copy_(x)).
FORWARD_PASSES = 3

# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "timm": make_module,
    "seed": lambda c: fnn.SELayer(c, 16),  # Linear without bias
    "torchvision-mbv3": lambda c: fnn.SqueezeExcitation(c, max(8, c // 4),
                                                         scale_activation=torch.nn.Hardsigmoid),
    "effective": lambda c: fnn.EffectiveSEModule(c),  # one C->C layer, hard_sigmoid
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    C = x.shape[1]
    R = max(1, C // 16)
    w1, b1, w2, b2 = rand(R, C) - 0.5, rand(R), rand(C, R) - 0.5, rand(C)
    _, pooled, xmax = ops.se_forward(x, w1, b1, w2, b2, 0, 1, 0)
    return {
        "se_forward": (lambda: ops.se_forward(x, w1, b1, w2, b2, 0, 1, 0), 1),
        "se_backward": (lambda: ops.se_backward(dy, x, pooled, xmax, w1, b1, w2, b2, 0, 1, 0), 2),
    }
