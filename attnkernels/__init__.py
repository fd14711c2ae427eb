"""attnkernels: fused kernels for CNN plug-in attention modules.

Public API: ``attnkernels.nn`` (drop-in modules), ``attnkernels.functional``,
``attnkernels.convert(model)`` and ``attnkernels.revert(model)``,
``attnkernels.available_backends()`` and
``attnkernels.use_backend(name)``. ``attnkernels.reference`` holds the
pure-PyTorch originals. Each family's code is in its folder
(``attnkernels/se``, ``eca``, ...; listed in ``attnkernels.families``), the
machinery they share in ``attnkernels/_core``."""
from ._core import extension as _extension
from ._core.backend import available_backends, use_backend
from .families import FAMILIES as _FAMILIES

if _extension.load():
    from ._core import gate_conv as _gate_conv
    from ._core import gate_matmul as _gate_matmul

    for _family in _FAMILIES:
        _family.op.register()
    _gate_conv.register()
    _gate_matmul.register()

from . import functional, nn, reference  # noqa: E402
from .convert import ConversionReport, convert, revert  # noqa: E402

__version__ = "0.1.0"
__all__ = ["nn", "functional", "reference", "convert", "revert", "ConversionReport",
           "available_backends", "use_backend"]
