"""Pure-PyTorch versions of every module flavour: the test oracle and the fallback path."""
from . import se
from .se import (EffectiveSEModule, EfficientNetSqueezeExcite, SELayer, SEModule,
                 SqueezeExcitation, squeeze_excite)

__all__ = ["se", "squeeze_excite", "SELayer", "SqueezeExcitation", "SEModule",
           "EfficientNetSqueezeExcite", "EffectiveSEModule"]
