"""SimAM benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """The official simam_module (e_lambda 1e-4): parameter-free, any channel count."""
    return fnn.SimAMModule(channels)


# The fused forward's floor in passes over x (docs/design.md):
# mean and variance read, apply read, write.
# python -m bench reports the forward against it (3 passes = 1.5x out.copy_(x)).
FORWARD_PASSES = 3

# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "official": make_module,
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    _, mean, denom = ops.simam_forward(x, 1e-4)
    return {
        "simam_forward": (lambda: ops.simam_forward(x, 1e-4), 1),
        "simam_backward": (lambda: ops.simam_backward(dy, x, mean, denom), 2),
    }
