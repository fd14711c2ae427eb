"""EMA, Efficient Multi-scale Attention (Ouyang et al., ICASSP 2023: "Efficient
Multi-Scale Attention Module with Cross-Spatial Learning"): per channel group,
directional strip gates normalised by a GroupNorm, a 3x3 convolution branch,
and a cross-spatial map that weighs every position of the group."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "EMA", root="EfficientMultiScaleAttention",
                        lookalike=r"^(ema|efficient_?multi_?scale\w*)(_?attention|module)?$")
