"""Drop-in fused modules: same constructor arguments and state_dict keys as the originals."""
from .cbam import (CBAM, CBAMBlock, CBAMBlockFc, CbamModule, ConvBlockAttention,
                   LightCbamModule, OfficialCBAM, UltralyticsCBAM)
from .coord import CA_Block, CoordAtt, CoordAttGroups, CoordAttn, CoordinateAttention
from .eca import (CecaModule, ECAAttention, ECABlock, ECALayer, EcaModule,
                  EfficientChannelAttention)
from .se import (EffectiveSEModule, EfficientNetSqueezeExcite, LegacySEModule, SELayer, SEModule,
                 SqueezeExcitation, SqueezeExcite)
from .triplet import LegacyTripletAttention, TripletAttention, TripletAttentionModule

__all__ = ["SqueezeExcite", "SELayer", "SqueezeExcitation", "SEModule",
           "EfficientNetSqueezeExcite", "EffectiveSEModule", "LegacySEModule",
           "EfficientChannelAttention", "ECALayer", "ECABlock", "ECAAttention", "EcaModule",
           "CecaModule",
           "ConvBlockAttention", "CBAM", "CBAMBlock", "CBAMBlockFc", "OfficialCBAM", "CbamModule",
           "LightCbamModule", "UltralyticsCBAM",
           "CoordinateAttention", "CoordAtt", "CoordAttGroups", "CA_Block", "CoordAttn",
           "TripletAttentionModule", "TripletAttention", "LegacyTripletAttention"]
