"""Drop-in fused modules: same constructor arguments and state_dict keys as the originals."""
from .cbam import (CBAM, CBAMBlock, CBAMBlockFc, CbamModule, ConvBlockAttention,
                   ExternalCBAMBlock, LightCbamModule, LinearCBAM, OfficialCBAM, UltralyticsCBAM)
from .coord import CA_Block, CoordAtt, CoordAttGroups, CoordAttn, CoordinateAttention
from .eca import (CecaModule, ECAAttention, ECABlock, ECALayer, EcaModule,
                  EfficientChannelAttention)
from .se import (EffectiveSEModule, EfficientNetSqueezeExcite, LegacySEModule, SELayer, SEModule,
                 SqueezeExcitation, SqueezeExcite, UltralyticsChannelAttention)
from .triplet import LegacyTripletAttention, TripletAttention, TripletAttentionModule

__all__ = ["SqueezeExcite", "SELayer", "SqueezeExcitation", "SEModule",
           "EfficientNetSqueezeExcite", "EffectiveSEModule", "LegacySEModule",
           "UltralyticsChannelAttention", "EfficientChannelAttention", "ECALayer", "ECABlock", "ECAAttention", "EcaModule",
           "CecaModule",
           "ConvBlockAttention", "CBAM", "CBAMBlock", "CBAMBlockFc", "OfficialCBAM", "CbamModule",
           "LightCbamModule", "UltralyticsCBAM", "LinearCBAM", "ExternalCBAMBlock",
           "CoordinateAttention", "CoordAtt", "CoordAttGroups", "CA_Block", "CoordAttn",
           "TripletAttentionModule", "TripletAttention", "LegacyTripletAttention"]
