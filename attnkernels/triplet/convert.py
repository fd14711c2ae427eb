"""How upstream Triplet Attention modules become this family's drop-in modules:
structure matchers for ``attnkernels.convert`` and timm's names and classes
for ``attnkernels.integrations.timm``."""
from torch import nn

from .._core.matching import children_of, has_children
from .modules import LegacyTripletAttention, TripletAttention


def _is_basic_conv(m) -> bool:
    """The official repos' BasicConv: conv, bn (or None), relu (or None)."""
    return isinstance(getattr(m, "conv", None), nn.Conv2d) and hasattr(m, "bn") and hasattr(m, "relu")


def _match_triplet(m):
    ch = children_of(m)
    names = set(ch)
    no_spatial = getattr(m, "no_spatial", None)
    if no_spatial is None:
        return None
    official, legacy = ["cw", "hc", "hw"], ["ChannelGateH", "ChannelGateW", "SpatialGate"]
    for branches, conv_attr, cls in ((official, "conv", TripletAttention),
                                     (legacy, "spatial", LegacyTripletAttention)):
        if names != set(branches[:2] if no_spatial else branches):
            continue
        if all(has_children(ch[b], {"compress", conv_attr})
               and _is_basic_conv(getattr(ch[b], conv_attr)) for b in names):
            return cls
    return None


# In the order they are tried.
MATCHERS = (_match_triplet,)


def timm_names():
    return {"triplet": _timm_triplet}


def _timm_triplet(channels=None, no_spatial: bool = False, kernel_size: int = 7, device=None,
                  dtype=None) -> TripletAttention:
    """timm-style constructor for the official Triplet Attention (``attn_layer='triplet'``):
    takes the block's channel count first, as timm's attention layers do, and ignores it."""
    m = TripletAttention(no_spatial=no_spatial, kernel_size=kernel_size)
    return m.to(device=device, dtype=dtype) if device is not None or dtype is not None else m


def timm_classes():
    return {}
