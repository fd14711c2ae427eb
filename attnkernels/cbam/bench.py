"""CBAM benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """The seeds' CBAM(in_planes, ratio=16, kernel_size=7), no BatchNorm: the
    copy most user code carries, and the configuration the targets were set on."""
    return fnn.CBAM(channels)


# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "seed": make_module,
    "timm": lambda c: fnn.CbamModule(c),  # [mean, max], conv + BatchNorm
    "official": lambda c: fnn.OfficialCBAM(c),  # [max, mean], BatchNorm momentum 0.01
    "light": lambda c: fnn.LightCbamModule(c),  # 0.5 mean + 0.5 max pools
    "ultralytics": lambda c: fnn.UltralyticsCBAM(c),  # one 1x1 conv on the mean
}
