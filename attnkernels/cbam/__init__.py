"""CBAM (Woo et al.) and its flavours: the official repository's, the seeds', timm's
CbamModule and LightCbamModule, ultralytics', External-Attention's."""
from .._core.family import Family

FAMILY = Family.declare(__name__, "CBAM", root="ConvBlockAttention",
                        lookalike=r"cbam|blockattention")
