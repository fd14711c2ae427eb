"""How upstream CoT modules become this family's drop-in module: a structure
matcher for ``attnkernels.convert`` (the forward is then checked on a probe
input, as for every family)."""
from torch import nn

from .._core.matching import has_children
from .modules import CoTAttention


def _match_cot(m):
    # key_embed, value_embed and attention_embed Sequentials; dim and kernel_size
    if not has_children(m, ("key_embed", "value_embed", "attention_embed")):
        return None
    if not all(isinstance(getattr(m, n), nn.Sequential)
               for n in ("key_embed", "value_embed", "attention_embed")):
        return None
    ints = [getattr(m, n, None) for n in ("dim", "kernel_size")]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ints):
        return None
    return CoTAttention


# In the order they are tried.
MATCHERS = (_match_cot,)


def timm_names():
    return {}


def timm_classes():
    return {}
