"""How upstream NAM modules become this family's drop-in modules: a
structure matcher for ``attnkernels.convert`` (timm has no NAM)."""
from torch import nn

from .._core.matching import children_of
from .modules import Channel_Att


def _match_channel_att(m):
    # One child, the BatchNorm2d ``bn2``, and nothing of its own; the probe in
    # convert() then checks the forward. The YOLO codebases' NAMAttention holds
    # one of these (converted as that child).
    ch = children_of(m)
    if set(ch) != {"bn2"} or not isinstance(ch["bn2"], nn.BatchNorm2d):
        return None
    if any(p is not None for p in m._parameters.values()) or \
            any(b is not None for b in m._buffers.values()):
        return None
    return Channel_Att


# In the order they are tried.
MATCHERS = (_match_channel_att,)


def timm_names():
    return {}


def timm_classes():
    return {}
