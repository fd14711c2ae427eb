"""Pure-PyTorch versions of every module flavour: the test oracle and the fallback path."""
from . import cbam, coord, eca, se, triplet
from .cbam import (CBAM, CBAMBlock, CBAMBlockFc, CbamModule, ExternalCBAMBlock, LightCbamModule,
                   LinearCBAM, OfficialCBAM, UltralyticsCBAM, UltralyticsChannelAttention,
                   convolutional_block_attention)
from .coord import CA_Block, CoordAtt, CoordAttGroups, CoordAttn, coordinate_attention
from .eca import (CecaModule, ECAAttention, ECABlock, ECALayer, EcaModule,
                  efficient_channel_attention)
from .se import (EffectiveSEModule, EfficientNetSqueezeExcite, LegacySEModule, SELayer, SEModule,
                 SqueezeExcitation, squeeze_excite)
from .triplet import LegacyTripletAttention, TripletAttention, triplet_attention

__all__ = ["coord", "coordinate_attention", "CoordAtt", "CoordAttGroups", "CA_Block", "CoordAttn",
           "cbam", "convolutional_block_attention", "CBAM", "CBAMBlock", "CBAMBlockFc",
           "OfficialCBAM", "CbamModule", "LightCbamModule", "UltralyticsCBAM", "LinearCBAM",
           "ExternalCBAMBlock", "UltralyticsChannelAttention",
           "se", "squeeze_excite", "SELayer", "SqueezeExcitation", "SEModule",
           "EfficientNetSqueezeExcite", "EffectiveSEModule", "LegacySEModule",
           "eca", "efficient_channel_attention", "ECALayer", "ECABlock", "ECAAttention",
           "EcaModule", "CecaModule",
           "triplet", "triplet_attention", "TripletAttention", "LegacyTripletAttention"]
