"""Real networks for the model benchmark and the integration tests: timm and
torchvision models built with random weights (nothing is downloaded), a small
network with every family, and a helper that makes every attention module matter."""
import os

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from attnkernels import reference as ref
from attnkernels._core.modules import FusedFamily


def triplet_layer(channels, device=None, dtype=None):
    """The official Triplet Attention as a timm ``attn_layer`` (it ignores ``channels``)."""
    return ref.TripletAttention()


# name -> builder of the unconverted model (eval mode)
NETWORKS = {
    "seresnet50": lambda: timm.create_model("seresnet50"),
    "legacy_seresnet18": lambda: timm.create_model("legacy_seresnet18"),
    "ecaresnet50d": lambda: timm.create_model("ecaresnet50d"),
    "efficientnet_b0": lambda: timm.create_model("efficientnet_b0"),
    "mobilenetv3_large_100": lambda: timm.create_model("mobilenetv3_large_100"),
    "cbam_resnet50": lambda: timm.create_model("resnet50", block_args=dict(attn_layer="cbam")),
    "coord_resnet50": lambda: timm.create_model("resnet50", block_args=dict(attn_layer="coord")),
    "triplet_resnet50": lambda: timm.create_model("resnet50",
                                                  block_args=dict(attn_layer=triplet_layer)),
    "skresnet18": lambda: timm.create_model("skresnet18"),
    "tv_efficientnet_b0": lambda: torchvision.models.efficientnet_b0(),
    "tv_mobilenet_v3_large": lambda: torchvision.models.mobilenet_v3_large(),
}

# The attention classes these networks hold, by upstream module.
ATTENTION_CLASSES = (
    timm.layers.SEModule, timm.layers.EffectiveSEModule, timm.layers.EcaModule,
    timm.layers.CecaModule, timm.layers.cbam.CbamModule, timm.layers.cbam.LightCbamModule,
    timm.layers.coord_attn.CoordAttn, timm.models._efficientnet_blocks.SqueezeExcite,
    timm.models.senet.SEModule, torchvision.ops.SqueezeExcitation, ref.TripletAttention,
    timm.layers.SelectiveKernel)


# ultralytics' detection models, built from their YAML (offline): the
# attention-carrying families (YOLOv10 PSA, YOLO11 C2PSA, YOLO12 A2C2f) and a
# YOLOv8n with a CBAM layer, as users write one (bench/data/yolov8n-cbam.yaml).
# ultralytics is AGPL-3.0: imported here only when one is built.
YOLO_NETWORKS = {"yolov8n_cbam": os.path.join(os.path.dirname(__file__), "data",
                                              "yolov8n-cbam.yaml"),
                 "yolov10n": "yolov10n.yaml", "yolo11n": "yolo11n.yaml",
                 "yolo12n": "yolo12n.yaml", "yolo12s": "yolo12s.yaml"}
# their attention classes (ChannelAttention and SpatialAttention: inside CBAM)
ULTRALYTICS_ATTENTION = ("CBAM", "Attention", "AAttn")


def yolo(name: str) -> nn.Module:
    """An ultralytics DetectionModel of ``YOLO_NETWORKS`` (random weights)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # its import would probe the network
    import ultralytics.nn.tasks as tasks
    from ultralytics.nn.modules import CBAM

    tasks.CBAM = CBAM  # a YAML names its layers from this namespace, which has no CBAM
    return tasks.DetectionModel(YOLO_NETWORKS[name], verbose=False)


def attention_paths(model: nn.Module):
    """Where ``model`` holds an upstream (unfused) attention module."""
    return {name for name, m in model.named_modules()
            if (isinstance(m, ATTENTION_CLASSES) and not isinstance(m, FusedFamily))
            or (type(m).__module__.startswith("ultralytics.")
                and type(m).__name__ in ULTRALYTICS_ATTENTION)}


def make_attention_matter(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random init zeroes the last BatchNorm of every residual block (so an
    attention module there changes nothing) and leaves BatchNorm statistics at
    0/1. Give every BatchNorm a non-zero affine and the statistics of ``x``, and
    switch off dropout and stochastic depth, so that outputs and gradients
    depend on every attention module and the network is deterministic."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
            m.momentum = None  # cumulative average: the statistics of the batches below
            m.reset_running_stats()
        if isinstance(m, nn.Dropout) or type(m).__name__ in ("StochasticDepth", "DropPath"):
            m.p = 0.0
            if hasattr(m, "drop_prob"):
                m.drop_prob = 0.0
        if isinstance(getattr(m, "drop_rate", None), float):  # timm's functional dropout
            m.drop_rate = 0.0
    model.train()
    with torch.no_grad():
        model(x)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return model.eval()


class ExactHardsigmoid(nn.Module):
    """nn.Hardsigmoid with an exact float64 backward: PyTorch's hardsigmoid
    backward multiplies by float32(1/6) in every dtype (a relative error of 3e-8
    in float64), while the forward values are the same as relu6(x + 3) / 6."""

    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


def exact_hardsigmoids(model: nn.Module) -> nn.Module:
    """``model`` with every nn.Hardsigmoid swapped for ExactHardsigmoid, so it can
    serve as the float64 oracle of a training step."""
    for name, m in list(model.named_children()):
        if isinstance(m, nn.Hardsigmoid):
            setattr(model, name, ExactHardsigmoid())
        else:
            exact_hardsigmoids(m)
    return model


class AttentionZoo(nn.Module):
    """A small CNN with one module of every family and main flavour, each after
    a conv-BN-ReLU: the network for the compile, autocast, DDP and export tests.
    Selective Kernel, whose module holds its own convolutions and BatchNorms
    (a network of its own), is tested alone (tests/test_sk.py)."""

    def __init__(self, channels: int = 32, classes: int = 10):
        super().__init__()
        c = channels
        attention = [timm.layers.SEModule(c), torchvision.ops.SqueezeExcitation(c, c // 4),
                     timm.models._efficientnet_blocks.SqueezeExcite(c, gate_layer="hard_sigmoid"),
                     timm.models.senet.SEModule(c, 4), timm.layers.EcaModule(c),
                     timm.layers.CecaModule(c), timm.layers.cbam.CbamModule(c),
                     ref.OfficialCBAM(c, 4), timm.layers.coord_attn.CoordAttn(c),
                     ref.CoordAtt(c, c), ref.TripletAttention(), ref.SimAMModule(c),
                     ref.Channel_Att(c)]
        layers = [nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        for a in attention:
            layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), a]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, classes)
        self.attention_modules = len(attention)  # what convert() must swap

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))
