"""NAM benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """The official Channel_Att, its BatchNorm's scales and statistics drawn at
    random (a fresh BatchNorm's equal scales would make every weight 1/C)."""
    m = fnn.Channel_Att(channels)
    g = torch.Generator().manual_seed(channels)
    with torch.no_grad():
        m.bn2.weight.copy_(torch.rand(channels, generator=g) * 2 - 1)
        m.bn2.bias.copy_(torch.randn(channels, generator=g) * 0.1)
        m.bn2.running_mean.copy_(torch.randn(channels, generator=g) * 0.1)
        m.bn2.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
    return m


# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "official": make_module,
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    channels = x.shape[1]
    weight, bias = rand(channels), rand(channels)
    rm, rv = rand(channels), rand(channels).abs() + 0.5
    _, mean, invstd, _ = ops.nam_forward(x, weight, bias, None, None, 1e-5)
    return {
        "nam_forward_batch": (lambda: ops.nam_forward(x, weight, bias, None, None, 1e-5), 2),
        "nam_forward_running": (lambda: ops.nam_forward(x, weight, bias, rm, rv, 1e-5), 1),
        "nam_backward": (lambda: ops.nam_backward(dy, x, weight, bias, mean, invstd, True), 4),
    }
