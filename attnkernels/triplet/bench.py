"""Triplet Attention benchmark: shapes from real networks, every provider."""
import torch

from .._core.bench_shapes import GPU_SHAPES, SHAPES  # noqa: F401  (the real-network shapes)
from . import modules as fnn


def make_module(channels: int) -> torch.nn.Module:
    """The official TripletAttention() (three branches, 7x7, BatchNorm in training
    mode for fwd+bwd, as the targets ask). Its parameters do not depend on C."""
    return fnn.TripletAttention()


# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "official": make_module,
    "no-spatial": lambda c: fnn.TripletAttention(no_spatial=True),  # two branches
}
