"""Efficient Channel Attention (Wang et al.) and its flavours: the official eca_layer,
the seeds', External-Attention's, timm's EcaModule and CecaModule."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "ECA", root="EfficientChannelAttention",
                        lookalike=r"eca|efficientchannel")
