"""Squeeze-and-Excitation benchmark: shapes from real networks, every provider."""
import torch

from attnkernels import nn as fnn

# (name, shape): ResNet-50 stages (timm SEModule at C with rd_ratio 1/16),
# EfficientNet/MobileNet-style early stage, and small-batch inference.
SHAPES = [
    ("resnet50-stage1", (16, 256, 56, 56)),
    ("effnet-stage1", (32, 64, 112, 112)),
    ("resnet50-stage3", (64, 1024, 14, 14)),
    ("resnet50-stage4", (128, 2048, 7, 7)),
    ("inference-b1", (1, 256, 56, 56)),
]
GPU_SHAPES = [("record-b64", (64, 256, 56, 56))]


def make_module(channels: int) -> torch.nn.Module:
    """timm's SEModule (ReLU, sigmoid, rd_ratio 1/16): the module ResNet-style nets carry."""
    return fnn.SEModule(channels)


# Flavour groups: each takes another kernel path (the first is make_module's).
FLAVOURS = {
    "timm": make_module,
    "seed": lambda c: fnn.SELayer(c, 16),  # Linear without bias
    "torchvision-mbv3": lambda c: fnn.SqueezeExcitation(c, max(8, c // 4),
                                                         scale_activation=torch.nn.Hardsigmoid),
    "effective": lambda c: fnn.EffectiveSEModule(c),  # one C->C layer, hard_sigmoid
}
