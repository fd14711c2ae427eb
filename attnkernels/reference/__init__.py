"""Pure-PyTorch versions of every module flavour: the test oracle and the
fallback path. Every family's reference classes and function, and each
family's reference module as ``reference.<family>``."""
from ..families import FAMILIES, exported

globals().update(exported("reference"))
globals().update({f.name: f.reference for f in FAMILIES})
__all__ = [f.name for f in FAMILIES] + list(exported("reference"))
