"""Pure-PyTorch versions of every module flavour: the test oracle and the
fallback path. Every family's reference classes and function, and each
family's reference module as ``reference.<family>``."""
from ..families import FAMILIES, ROUTED, exported

globals().update(exported("reference"))
globals().update({f.name: f.reference for f in FAMILIES + ROUTED})
__all__ = [f.name for f in FAMILIES + ROUTED] + list(exported("reference"))
