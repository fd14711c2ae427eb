"""CoT attention benchmark: the module at the sizes it is used at, every provider."""
import torch

from . import modules as fnn

# (name, shape): ResNet stage 1 (python -m bench's default and --quick shape),
# and DANet-sized maps (bench.attention's size). CoT's library convolutions
# (a grouped 3x3, four 1x1 up to 2C -> C) cost more than every pass of ours:
# the other stages of python -m bench's shape list would spend minutes in them.
SHAPES = [
    ("resnet50-stage1", (16, 256, 56, 56)),
    ("cot-b8-32x32", (8, 256, 32, 32)),
]
GPU_SHAPES = [("record-b64", (64, 256, 56, 56))]  # the GPU runs' --quick shape


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
