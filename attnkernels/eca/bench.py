"""Efficient Channel Attention benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """timm's EcaModule (k from the channel count): the module ECA-ResNets carry."""
    return fnn.EcaModule(channels)


# The fused forward's floor in passes over x (docs/design.md): mean read, apply read, write.
# python -m bench reports the forward against it (3 passes = 1.5x out.copy_(x)).
FORWARD_PASSES = 3

# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "timm": make_module,
    "circular": lambda c: fnn.CecaModule(c),  # timm CecaModule: circular padding
    "official": lambda c: fnn.ECALayer(c, 3),  # eca_layer(channel, k_size=3)
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    w = rand(5)
    _, pooled = ops.eca_forward(x, w, None, False, 0)
    return {
        "eca_forward": (lambda: ops.eca_forward(x, w, None, False, 0), 1),
        "eca_backward": (lambda: ops.eca_backward(dy, x, pooled, w, None, False, 0), 2),
    }
