"""Drop-in fused modules: same constructor arguments and state_dict keys as
the originals. Every family's drop-in classes (``attnkernels.<family>.modules``)."""
from ..families import exported

globals().update(exported("modules"))
__all__ = list(exported("modules"))
