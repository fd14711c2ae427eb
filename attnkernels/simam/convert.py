"""How upstream SimAM modules become this family's drop-in modules: a
structure matcher for ``attnkernels.convert`` (timm has no SimAM)."""
from torch import nn

from .._core.matching import children_of
from .modules import SimAM, SimAMModule


def _match_simam(m):
    # Parameter-free: the structure is a numeric e_lambda and, at most, the
    # official Sigmoid child ``activaton``. The probe in convert() then checks
    # the forward (copies that changed the formula are left alone).
    e_lambda = getattr(m, "e_lambda", None)
    if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)):
        return None
    ch = children_of(m)
    if ch and (set(ch) != {"activaton"} or not isinstance(ch["activaton"], nn.Sigmoid)):
        return None
    if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
        return None
    return SimAM if type(m).__name__ == "SimAM" else SimAMModule


# In the order they are tried.
MATCHERS = (_match_simam,)


def timm_names():
    return {}


def timm_classes():
    return {}
