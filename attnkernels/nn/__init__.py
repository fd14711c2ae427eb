"""Drop-in fused modules: same constructor arguments and state_dict keys as the originals."""
from .se import (EffectiveSEModule, EfficientNetSqueezeExcite, SELayer, SEModule,
                 SqueezeExcitation, SqueezeExcite)

__all__ = ["SqueezeExcite", "SELayer", "SqueezeExcitation", "SEModule",
           "EfficientNetSqueezeExcite", "EffectiveSEModule"]
