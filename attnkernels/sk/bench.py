"""Selective Kernel benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """Seed SKAttention with two depthwise branches (3x3 and 5x5, group =
    channels): the branch convolutions, which stay with the library, then cost
    about what the attention does, so the module's time shows the fused part."""
    return fnn.SKAttention(channels, kernels=[3, 5], reduction=16, group=channels)


def make_timm(channels: int) -> torch.nn.Module:
    """timm's SelectiveKernel, its defaults (3x3 and dilated 3x3, split input)."""
    return fnn.SelectiveKernel(channels)


# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "seed": make_module,
    "timm": make_timm,
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    branches = [x, x.clone()]
    logits = rand(x.shape[0], 2, x.shape[1])
    return {
        "sk_pool": (lambda: ops.sk_pool(branches), 2),
        "sk_forward": (lambda: ops.sk_forward(branches, logits), 2),
        "sk_backward": (lambda: ops.sk_backward(dy, branches, logits), 3),
    }
