"""Loads the compiled extension once; a missing or mismatched build is a warning,
not an import error, and the other backends keep serving. ATTNKERNELS_EXTENSION
names another build to load instead of attnkernels._C (a library of the same ops,
such as tools/build_emulated.py's, whose CPU key runs the CUDA kernels emulated)."""
import glob
import os
import sys
import warnings

import torch

_state = {"loaded": None, "error": None, "advice": None}
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # attnkernels/


def load() -> bool:
    if _state["loaded"] is None:
        path = os.environ.get("ATTNKERNELS_EXTENSION")
        try:
            if path:  # another build of the ops (tools/build_emulated.py's, say)
                torch.ops.load_library(path)
            elif not _built_libraries():
                # not `from . import _C`: Python would call the missing module a
                # "circular import" and send the user looking for the wrong cause
                raise ImportError(f"no compiled extension (_C*.so) in {PACKAGE_DIR}")
            else:
                from .. import _C  # noqa: F401  (registers the C++ operators)

            _state["loaded"] = True
        except (ImportError, OSError) as e:  # not built, or built against another torch
            _state["loaded"] = False
            _state["error"] = f"{type(e).__name__}: {e}"
            _state["advice"] = _advice(path)
            warnings.warn(
                f"attnkernels: the compiled extension could not be loaded ({_state['error']}); "
                "the C++/CUDA backends are unavailable, the Triton and reference backends still "
                f"serve. {_state['advice']}",
                RuntimeWarning,
                stacklevel=_first_frame_outside_the_package(),
            )
    return _state["loaded"]


def _built_libraries():
    return glob.glob(os.path.join(PACKAGE_DIR, "_C.*.so")) + glob.glob(
        os.path.join(PACKAGE_DIR, "_C.*.pyd"))


def _installed_elsewhere():
    """The attnkernels package pip installed, when it is not the one imported
    (a source tree first on sys.path shadows it), and it holds a built _C."""
    try:
        from importlib.metadata import distribution

        dist = distribution("attnkernels")
        files = dist.files or []
    except Exception:  # noqa: BLE001  (not installed, or metadata unreadable)
        return None
    for f in files:
        if f.parts[:1] == ("attnkernels",) and f.name.startswith("_C."):
            where = os.path.dirname(os.path.abspath(str(dist.locate_file(f))))
            if where != PACKAGE_DIR:
                return where
    return None


def _advice(path) -> str:
    if path:
        return f"ATTNKERNELS_EXTENSION={path} names a library that does not load."
    if not _built_libraries():
        other = _installed_elsewhere()
        if other:
            return (f"This `attnkernels` is the source tree at {PACKAGE_DIR}, which shadows the "
                    f"installed package at {other} because the current directory (or PYTHONPATH) "
                    "comes first on sys.path. Install it in place with `pip install -e .` from "
                    "the source tree, or run from another directory.")
        return ("Build it with `pip install -e .` in the source tree (or `pip install .`), "
                f"against the torch in use ({torch.__version__}).")
    return ("It was built against another torch, or is damaged: rebuild it with `pip install -e .` "
            f"in the source tree (or `pip install .`), against the torch in use "
            f"({torch.__version__}).")


def _first_frame_outside_the_package() -> int:
    """The warning's stacklevel: the user's line that imported attnkernels, not
    a line of the library or of importlib."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib" in name and "_bootstrap" in name:
            frame = frame.f_back  # warnings.warn skips these frames itself
            continue
        if not os.path.abspath(name).startswith(PACKAGE_DIR + os.sep):
            return level
        frame, level = frame.f_back, level + 1
    return 1


def advice() -> str:
    """How to get the compiled extension back (empty when it loaded)."""
    return _state["advice"] or ""


def error() -> str:
    return _state["error"] or ""


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the extension registered ``attnkernels::op`` for a dispatch key."""
    return load() and torch._C._dispatch_has_kernel_for_dispatch_key(f"attnkernels::{op}", dispatch_key)
