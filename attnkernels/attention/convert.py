"""How upstream attention modules become this family's drop-in modules:
structure matchers for ``attnkernels.convert`` (the forward is then checked
on a probe input, as for every family)."""
from .._core.matching import has_children
from .modules import UltralyticsAreaAttention, UltralyticsAttention


def _ints(m, names) -> bool:
    return all(isinstance(getattr(m, n, None), int) and not isinstance(getattr(m, n), bool)
               for n in names)


def _match_ultralytics(m):
    # q, k and v from one 1x1 Conv, a positional-encoding Conv of v, a
    # projection: the children qkv, proj and pe, and the numbers the forward reads
    if not has_children(m, ("qkv", "proj", "pe")):
        return None
    if _ints(m, ("num_heads", "head_dim", "key_dim")) and isinstance(getattr(m, "scale", None),
                                                                   float):
        return UltralyticsAttention
    if _ints(m, ("area", "num_heads", "head_dim")):
        return UltralyticsAreaAttention
    return None


# In the order they are tried.
MATCHERS = (_match_ultralytics,)
