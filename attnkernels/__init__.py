"""attnkernels: fused kernels for CNN plug-in attention modules.

Public API: ``attnkernels.nn`` (drop-in modules), ``attnkernels.functional``,
``attnkernels.convert(model)``, ``attnkernels.available_backends()`` and
``attnkernels.use_backend(name)``. ``attnkernels.reference`` holds the
pure-PyTorch originals."""
from . import _extension
from ._backend import available_backends, use_backend

if _extension.load():
    from .ops import cbam as _cbam_ops
    from .ops import coord as _coord_ops
    from .ops import eca as _eca_ops
    from .ops import gate_conv as _gate_conv_ops
    from .ops import gate_matmul as _gate_matmul_ops
    from .ops import se as _se_ops
    from .ops import triplet as _triplet_ops

    _se_ops.register()
    _eca_ops.register()
    _cbam_ops.register()
    _coord_ops.register()
    _triplet_ops.register()
    _gate_conv_ops.register()
    _gate_matmul_ops.register()

from . import functional, nn, reference  # noqa: E402
from .convert import ConversionReport, convert  # noqa: E402

__version__ = "0.1.0"
__all__ = ["nn", "functional", "reference", "convert", "ConversionReport",
           "available_backends", "use_backend"]
