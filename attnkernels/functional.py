"""One function per module family; each validates its arguments and picks the
backend (``attnkernels.<family>.functional``)."""
from .families import exported

globals().update(exported("functional"))
__all__ = list(exported("functional"))
