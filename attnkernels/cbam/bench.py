"""CBAM benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """The seeds' CBAM(in_planes, ratio=16, kernel_size=7), no BatchNorm: the
    copy most user code carries, and the configuration the targets were set on."""
    return fnn.CBAM(channels)


# The fused forward's floor in passes over x (docs/design.md): channel statistics
# read, spatial statistics read of x * ca, apply read, write.
# python -m bench reports the forward against it (4 passes = 2x out.copy_(x)).
FORWARD_PASSES = 4

# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "seed": make_module,
    "timm": lambda c: fnn.CbamModule(c),  # [mean, max], conv + BatchNorm
    "official": lambda c: fnn.OfficialCBAM(c),  # [max, mean], BatchNorm momentum 0.01
    "light": lambda c: fnn.LightCbamModule(c),  # 0.5 mean + 0.5 max pools
    "ultralytics": lambda c: fnn.UltralyticsCBAM(c),  # one 1x1 conv on the mean
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    N, C, H, W = x.shape
    ca, sa = rand(N, C), rand(N, H, W)
    _, cmax = ops.cbam_channel_pool(x)
    _, smax = ops.cbam_spatial_pool(x, ca)
    red = ops.cbam_backward_reduce(dy, x, ca, sa, cmax, smax, True)
    return {
        "cbam_channel_pool": (lambda: ops.cbam_channel_pool(x), 1),
        "cbam_spatial_pool": (lambda: ops.cbam_spatial_pool(x, ca), 1),
        "cbam_apply": (lambda: ops.cbam_apply(x, ca, sa), 1),
        "cbam_backward_reduce": (lambda: ops.cbam_backward_reduce(dy, x, ca, sa, cmax, smax, True), 2),
        "cbam_spatial_pool_backward": (
            lambda: ops.cbam_spatial_pool_backward(x, ca, smax, red[3], sa, sa, True), 1),
        "cbam_backward_apply": (lambda: ops.cbam_backward_apply(
            dy, x, ca, sa, cmax, red[2], ca, ca, smax, red[3], sa, sa, True), 2),
    }
