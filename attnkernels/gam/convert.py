"""How upstream GAM modules become this family's drop-in module: a structure
matcher for ``attnkernels.convert`` (the forward is then checked on a probe
input, as for every family)."""
from torch import nn

from .._core.matching import has_children
from .modules import GAM_Attention, GAM_AttentionGated, GAM_AttentionYOLO


def _match_gam(m):
    # channel_attention (Linear, act, Linear) and spatial_attention (conv, BN,
    # act, conv, BN) Sequentials
    if not has_children(m, ("channel_attention", "spatial_attention")):
        return None
    ca, sa = m.channel_attention, m.spatial_attention
    if not (isinstance(ca, nn.Sequential) and len(ca) == 3 and isinstance(sa, nn.Sequential)
            and len(sa) == 5):
        return None
    if isinstance(ca[0], nn.Linear) and isinstance(ca[2], nn.Linear):
        # alike in structure (the YOLO copy's convs grouped or not): the probe tells
        return GAM_Attention, GAM_AttentionGated, GAM_AttentionYOLO
    return None


# In the order they are tried.
MATCHERS = (_match_gam,)
