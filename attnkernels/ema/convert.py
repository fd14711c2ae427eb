"""How upstream EMA modules become this family's drop-in modules: a structure
matcher for ``attnkernels.convert`` (timm has no EMA)."""
from torch import nn

from .._core.matching import children_of, is_conv1x1
from .modules import EMA

_CHILDREN = {"softmax": nn.Softmax, "agp": nn.AdaptiveAvgPool2d, "pool_h": nn.AdaptiveAvgPool2d,
             "pool_w": nn.AdaptiveAvgPool2d, "gn": nn.GroupNorm, "conv1x1": nn.Conv2d,
             "conv3x3": nn.Conv2d}


def _match_ema(m):
    # The official EMA and seed 001's copy (same children, keys and forward):
    # the children by name and type, an int ``groups``, a GroupNorm and 1x1
    # conv over one group's channels. The probe in convert() then checks the
    # forward (copies that changed it are left alone).
    ch = children_of(m)
    if set(ch) != set(_CHILDREN) or not all(isinstance(ch[k], t) for k, t in _CHILDREN.items()):
        return None
    groups = getattr(m, "groups", None)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0:
        return None
    g = ch["conv1x1"].in_channels
    if not (is_conv1x1(ch["conv1x1"], cin=g, cout=g)
            and ch["gn"].num_groups == ch["gn"].num_channels == g):
        return None
    return EMA


# In the order they are tried.
MATCHERS = (_match_ema,)


def timm_names():
    return {}


def timm_classes():
    return {}
