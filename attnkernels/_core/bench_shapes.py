"""The activation shapes every family is benchmarked on: from real networks."""

# (name, shape): ResNet-50 stages (where the attention module sits),
# EfficientNet/MobileNet-style early stage, and small-batch inference.
SHAPES = [
    ("resnet50-stage1", (16, 256, 56, 56)),
    ("effnet-stage1", (32, 64, 112, 112)),
    ("resnet50-stage3", (64, 1024, 14, 14)),
    ("resnet50-stage4", (128, 2048, 7, 7)),
    ("inference-b1", (1, 256, 56, 56)),
]
GPU_SHAPES = [("record-b64", (64, 256, 56, 56))]
