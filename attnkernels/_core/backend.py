"""Backend records and selection (xformers style).

Each backend says whether it can run on this machine at all and, for a given
input, every reason it cannot serve it. ``auto`` takes the first backend in the
priority list with no reasons; an explicit choice that cannot serve raises an
error listing them. The choice comes from, in order: the per-call ``backend=``
argument, ``use_backend(...)``, the ``ATTNKERNELS_BACKEND`` environment variable
(read at import), ``"auto"``.
"""
import contextlib
import importlib.util
import os
from typing import Dict, List, Optional, Union

import torch

from . import extension as _extension
from .ops import autograd_records

NAMES = ("auto", "cuda", "triton", "cpu", "reference")
PRIORITY = ("cuda", "triton", "cpu", "reference")
_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def checked(name: str) -> str:
    """``name`` if it is a backend name, else a ValueError listing them."""
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of {NAMES}")
    return name


_state = {"backend": checked(os.environ.get("ATTNKERNELS_BACKEND", "auto").strip().lower() or "auto")}


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _machine_reason(name: str) -> Optional[str]:
    """Why a backend cannot run on this machine at all (None: it can)."""
    if name == "reference":
        return None
    if name == "cpu":
        return None if _extension.has_kernel("se_forward", "CPU") else (
            "the compiled extension is not loaded: " + (_extension.error() or "unknown reason"))
    if name == "cuda":
        if not _extension.has_kernel("se_forward", "CUDA"):
            return ("the extension was built without CUDA kernels" if _extension.load()
                    else "the compiled extension is not loaded: " + _extension.error())
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        return None
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed"
        if not torch.cuda.is_available() and not triton_interpret():
            return "no CUDA device (set TRITON_INTERPRET=1 to run Triton kernels on the CPU)"
        return None
    raise ValueError(name)


# Read once, at import: no host queries (or dispatcher lookups) inside compiled regions.
_MACHINE_REASONS = {name: _machine_reason(name) for name in PRIORITY}


def machine_reason(name: str) -> Optional[str]:
    return _MACHINE_REASONS[name]


def is_dense(x: torch.Tensor) -> bool:
    """NCHW-contiguous or channels_last: the layouts the fused kernels read."""
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def input_reasons(name: str, x: torch.Tensor, family_reasons: List[str] = (),
                  backend_reasons: Optional[Dict[str, List[str]]] = None) -> List[str]:
    """Every reason backend ``name`` cannot serve input ``x`` (empty: it can).
    family_reasons refuse every fused backend; backend_reasons[name] only that one."""
    if name == "reference":
        return []
    reasons = []
    why = machine_reason(name)
    if why:
        reasons.append(why)
    dev = x.device.type
    if name == "cpu" and dev != "cpu":
        reasons.append(f"x is on {dev}, the cpu backend runs on the CPU")
    if name == "cuda" and dev != "cuda":
        reasons.append(f"x is on {dev}, the cuda backend runs on CUDA devices")
    if name == "triton":
        if dev == "cpu" and not triton_interpret():
            reasons.append("x is on the CPU and TRITON_INTERPRET is not 1")
        elif dev not in ("cpu", "cuda"):
            reasons.append(f"x is on {dev}")
        if dev == "cpu" and x.dtype == torch.bfloat16:
            reasons.append("the Triton interpreter has no bfloat16 arithmetic")
    if x.dtype not in _FUSED_DTYPES:
        reasons.append(f"dtype {x.dtype} is not one of float32, float16, bfloat16, float64")
    if x.dim() == 4 and not is_dense(x):
        reasons.append("x is neither NCHW-contiguous nor channels_last (call .contiguous())")
    reasons.extend(family_reasons)
    reasons.extend((backend_reasons or {}).get(name, ()))
    return reasons


def _exporting() -> bool:
    """Whether torch.export traces. Reads the flag behind torch.compiler.is_exporting():
    torch 2.11's dynamo folds that call to True under every torch.compile trace
    (2.14 reads the flag, as this does)."""
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    return torch.compiler.is_exporting() if flag is None else flag


def select(x: torch.Tensor, requested: Optional[str] = None, family_reasons: List[str] = (),
           backend_reasons: Optional[Dict[str, List[str]]] = None,
           inductor_fuses: Union[bool, str] = False, autograd_inputs=()) -> str:
    """The backend that serves ``x``: the requested one, or the first with no reasons.

    While ``torch.onnx.export`` traces, always the reference: its decomposition
    (mean, amax, matmul, conv, BatchNorm, sigmoid: standard ONNX operators, and
    no adaptive pools) is what the exported graph must hold, whatever the choice.

    inductor_fuses: the family is faster under torch.compile as its reference
    decomposition, which inductor fuses with the layers around it (the pooling
    into the BatchNorm before, the multiply into the residual add and
    activation after), than as our opaque ops (measured on whole networks:
    docs/design.md, "Under torch.compile"): while torch.compile traces, auto
    then picks the reference (not while torch.export traces: an exported
    program keeps our ops). An explicit backend is kept. ``"without autograd"``:
    only where autograd records nothing on ``autograd_inputs`` (the op's tensors),
    for a family whose reference backward inductor gets wrong (CBAM)."""
    name = checked(requested or _state["backend"])
    if torch.onnx.is_in_onnx_export():
        return "reference"
    if inductor_fuses == "without autograd":
        inductor_fuses = not autograd_records(autograd_inputs)
    if (name == "auto" and inductor_fuses and torch.compiler.is_compiling()
            and not _exporting()):  # torch.export keeps our ops
        return "reference"
    if name != "auto":
        reasons = input_reasons(name, x, family_reasons, backend_reasons)
        if reasons:
            raise RuntimeError(f"attnkernels backend {name!r} cannot serve this input: "
                               + "; ".join(reasons))
        return name
    for cand in PRIORITY:
        # The interpreter is a debugging tool: auto never picks Triton for CPU tensors.
        if cand == "triton" and x.device.type == "cpu":
            continue
        if machine_reason(cand):  # cannot run here at all: no need to list why
            continue
        if not input_reasons(cand, x, family_reasons, backend_reasons):
            return cand
    return "reference"


def available_backends() -> Dict[str, Optional[str]]:
    """Each backend with None if it can run on this machine, else the reason it cannot."""
    return {name: machine_reason(name) for name in PRIORITY}


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run attnkernels ops with backend ``name`` ("auto", "cpu", ...)."""
    previous = _state["backend"]
    _state["backend"] = checked(name)
    try:
        yield
    finally:
        _state["backend"] = previous
