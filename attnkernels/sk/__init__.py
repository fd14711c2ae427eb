"""Selective Kernel attention (Li et al., 2019: "Selective Kernel Networks"):
the softmax over branches of convolutions with different receptive fields,
weighted per channel by a gate on their pooled sum."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "Selective Kernel", root="SelectiveKernelAttention",
                        lookalike=r"^(sk(attention|conv|unit|layer)?|selective_?kernel\w*)$")
