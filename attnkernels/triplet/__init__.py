"""Triplet Attention (Misra et al.): the official repository's and its legacy version."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "Triplet Attention", root="TripletAttentionModule",
                        lookalike=r"triplet")
