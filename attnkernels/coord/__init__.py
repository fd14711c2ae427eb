"""Coordinate Attention (Hou et al.) and its flavours: the official CoordAtt, the
seeds' CA_Block and grouped variant, timm's CoordAttn."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "Coordinate Attention", root="CoordinateAttention",
                        lookalike=r"coord|^ca_")
