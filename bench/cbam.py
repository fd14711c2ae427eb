"""CBAM benchmark: the same shapes as SE, every provider."""
import torch

from attnkernels import nn as fnn

from .se import GPU_SHAPES, SHAPES  # noqa: F401  (the same real-network shapes)


def make_module(channels: int) -> torch.nn.Module:
    """The seeds' CBAM(in_planes, ratio=16, kernel_size=7), no BatchNorm: the
    copy most user code carries, and the configuration the targets were set on."""
    return fnn.CBAM(channels)

