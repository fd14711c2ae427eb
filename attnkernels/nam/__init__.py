"""NAM's channel attention (Liu et al., 2021: "NAM: Normalization-based
Attention Module"): BatchNorm, its scales as channel weights, a sigmoid gate."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "NAM", root="NAMChannelAttention",
                        lookalike=r"^(nam(attention)?|channel_att)$")
