"""CoT attention benchmark: the module at the sizes it is used at, every provider."""
import torch

from . import modules as fnn

# (name, shape): CoT blocks sit where the maps are small (a whole-map softmax,
# k*k*C-channel embeddings): batch 1 at ResNet stage 1, and DANet-sized maps
# (bench.attention's size). Larger stages of python -m bench's shape list
# would spend minutes in the library convolutions alone.
SHAPES = [
    ("inference-b1", (1, 256, 56, 56)),
    ("cot-b8-32x32", (8, 256, 32, 32)),
]
GPU_SHAPES = [("cot-b32-32x32", (32, 256, 32, 32))]


def make_module(channels: int) -> torch.nn.Module:
    """External-Attention-pytorch's CoTAttention(channels, kernel_size=3)."""
    return fnn.CoTAttention(channels, 3)


# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "external": make_module,
}


def raw_passes(x, dy, rand):
    """``python -m bench.passes``: this family's CPU passes, name -> (fn, x-sized tensors read)."""
    ops = torch.ops.attnkernels
    att, v = x, x.clone()
    _, mx, inv = ops.cot_forward(att, v, x)
    return {
        "cot_forward": (lambda: ops.cot_forward(att, v, x), 3),
        "cot_backward": (lambda: ops.cot_backward(dy, att, v, mx, inv), 3),
    }
