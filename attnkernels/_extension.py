"""Loads the compiled extension once; a missing or mismatched build is a warning,
not an import error, and the other backends keep serving. ATTNKERNELS_EXTENSION
names another build to load instead of attnkernels._C (a library of the same ops,
such as tools/build_emulated.py's, whose CPU key runs the CUDA kernels emulated)."""
import os
import warnings

import torch

_state = {"loaded": None, "error": None}


def load() -> bool:
    if _state["loaded"] is None:
        try:
            path = os.environ.get("ATTNKERNELS_EXTENSION")
            if path:  # another build of the ops (tools/build_emulated.py's, say)
                torch.ops.load_library(path)
            else:
                from . import _C  # noqa: F401  (registers the C++ operators)

            _state["loaded"] = True
        except (ImportError, OSError) as e:  # not built, or built against another torch
            _state["loaded"] = False
            _state["error"] = f"{type(e).__name__}: {e}"
            warnings.warn(
                "attnkernels: the compiled extension could not be loaded "
                f"({_state['error']}); the C++/CUDA backends are unavailable, the Triton and "
                "reference backends still serve. Reinstall with `pip install .` against the "
                f"torch in use ({torch.__version__}).",
                RuntimeWarning,
                stacklevel=3,
            )
    return _state["loaded"]


def error() -> str:
    return _state["error"] or ""


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the extension registered ``attnkernels::op`` for a dispatch key."""
    return load() and torch._C._dispatch_has_kernel_for_dispatch_key(f"attnkernels::{op}", dispatch_key)
