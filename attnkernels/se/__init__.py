"""Squeeze-and-Excitation (Hu et al.) and its flavours: the seeds' SELayer, torchvision,
timm (SEModule, EffectiveSEModule, EfficientNet's SqueezeExcite, legacy SENet), ultralytics."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "Squeeze-and-Excitation", root="SqueezeExcite",
                        lookalike=r"squeeze|excit|selayer|se_|semodule")
