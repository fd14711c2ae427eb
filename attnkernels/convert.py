"""Swap known attention modules in a model for their fused versions.

A module is recognised by its structure (the names, types and shapes of its
submodules), not only by its class, so copy-pasted classes convert too. Every
candidate is then checked on a probe input: the fused module must give the
original's output (float64, tight tolerance), else it is left alone. The fused
module adopts the original's submodules, so parameters, buffers and any
optimizer state that refers to them are preserved as they are.
"""
import copy
import dataclasses
import re
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from ._core.matching import CALL_HOOK_TABLES, has_call_hooks
from .families import FAMILIES, ROUTED


@dataclasses.dataclass
class ConversionReport:
    """What ``convert`` (or ``revert``: ``verb="reverted"``) swapped, as
    (path, old class, new class), what it left alone, as (path, class, why),
    and the modules whose class name says attention that it did not replace
    but converted modules inside of (mixtures, selectors, per-level lists), as
    (path, class, how many inside)."""
    converted: List[Tuple[str, str, str]] = dataclasses.field(default_factory=list)
    left_alone: List[Tuple[str, str, str]] = dataclasses.field(default_factory=list)
    containers: List[Tuple[str, str, int]] = dataclasses.field(default_factory=list)
    verb: str = "converted"

    def __str__(self) -> str:
        lines = [f"{self.verb} {len(self.converted)} module(s), left {len(self.left_alone)} alone"]
        lines += [f"  {self.verb:10s} {n or '<root>'}: {a} -> {b}" for n, a, b in self.converted]
        lines += [f"  left alone {n or '<root>'}: {a}: {why}" for n, a, why in self.left_alone]
        lines += [f"  container  {n or '<root>'}: {a}: not replaced, {k} converted inside"
                  for n, a, k in self.containers]
        return "\n".join(lines)


_EVERY_FAMILY = FAMILIES + ROUTED  # the fused and the routed ones

# every family's structure matchers, in the order they are tried
MATCHERS: List[Callable] = [m for f in _EVERY_FAMILY for m in f.convert.MATCHERS]
_FUSED = tuple(f.root for f in _EVERY_FAMILY)


def _adopt(cls, original: nn.Module) -> nn.Module:
    """An instance of fused class ``cls`` that shares ``original``'s submodules."""
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    for name, child in original.named_children():
        new.add_module(name, child)
    for name, param in original._parameters.items():  # its own (DANet's gamma), the same objects
        new.register_parameter(name, param)
    for name, buf in original._buffers.items():
        new.register_buffer(name, buf, persistent=name not in original._non_persistent_buffers_set)
    for attr in cls.ADOPTED_ATTRS:
        if hasattr(original, attr) and attr not in original._modules:
            setattr(new, attr, getattr(original, attr))
    new.training = original.training  # its own flag only: each child keeps its mode
    return new


# nn.Module's own bookkeeping in an instance's __dict__: not carried over as attributes
_MODULE_STATE = frozenset(vars(nn.Module()))
_HOOK_TABLES = tuple(k for k in sorted(_MODULE_STATE) if "hooks" in k) + ("_is_full_backward_hook",)


# where a converted module keeps the instance it replaced (a plain attribute: no
# state_dict keys, no parameters of its own; its children are the fused module's)
_ORIGINAL = "_attnkernels_original"


def _carry_instance_state(original: nn.Module, new: nn.Module) -> None:
    """What frameworks attach to a module instance goes along to its fused
    replacement: plain attributes (ultralytics' ``f``, ``i``, ``type`` and ``np``,
    which its models' forward reads) and the module's own hooks (the same
    tables, so a handle held elsewhere still removes its hook)."""
    # an instance attribute may shadow what the classes both share (ultralytics'
    # ``type`` shadows nn.Module.type), never what the fused classes define
    fused_names = set().union(*(vars(c) for c in type(new).__mro__
                                if c not in type(original).__mro__))
    for key, value in vars(original).items():
        if key not in _MODULE_STATE and key not in fused_names and key not in new._modules:
            new.__dict__.setdefault(key, value)
    for table in _HOOK_TABLES:
        setattr(new, table, getattr(original, table))


def _hooked_submodule(module: nn.Module) -> Optional[str]:
    """The first submodule of ``module`` with forward or backward hooks: the
    fused kernels compute submodules without calling them, so those would not run."""
    for name, sub in module.named_modules():
        if name and has_call_hooks(sub):
            return name
    return None


def _without_hooks(module: nn.Module) -> nn.Module:
    """``module`` (a probe's copy) with its own and its submodules' call hooks
    dropped: the user's hooks must not see probe inputs (drop-ins that call
    their submodules would run those)."""
    for sub in module.modules():
        for table in CALL_HOOK_TABLES:
            setattr(sub, table, type(getattr(sub, table))())
        sub._is_full_backward_hook = None
    return module


def _probe_mismatch(original: nn.Module, candidate: nn.Module) -> Optional[str]:
    """Compare outputs on a probe input in float64 on deep copies (eval mode, so
    BatchNorm statistics are left untouched); None when they agree."""
    channels = candidate.probe_channels()
    if channels is None:
        return "cannot infer the channel count"
    a = _without_hooks(copy.deepcopy(original)).double().eval().cpu()
    b = _without_hooks(copy.deepcopy(candidate)).double().eval().cpu()
    if hasattr(b, "probe_prepare"):  # parameters whose initial value hides the forward
        b.probe_prepare(a, b)
    g = torch.Generator().manual_seed(0)
    if hasattr(b, "probe_args"):  # a forward that takes other than one (B, C, H, W) map
        args = b.probe_args(g)
    else:
        args = (torch.randn(2, channels, *b.probe_size(), generator=g, dtype=torch.float64),)
    try:
        with torch.no_grad():
            ya, yb = a(*args), b(*args)
    except Exception as e:  # noqa: BLE001 - any failure means: do not convert
        return f"probe run failed: {type(e).__name__}: {e}"
    # equal_nan: a fully masked query gives NaN in some originals, in both then
    if ya.shape != yb.shape or not torch.allclose(ya, yb, rtol=1e-9, atol=1e-12,
                                                  equal_nan=True):
        return "its output differs from the fused module's on a probe input"
    return None


def _try_convert(module: nn.Module):
    """(fused module, None), or (None, reason) for a module that matches a flavour's
    structure but cannot be converted, or (None, None)."""
    if isinstance(module, _FUSED):
        return None, None
    for matcher in MATCHERS:
        found = matcher(module)
        if found is None:
            continue
        # flavours alike in structure (GAM's) are told apart by the probe, in order
        classes, mismatch = found if isinstance(found, tuple) else (found,), None
        for cls in classes:
            hooked = None if getattr(cls, "CALLS_SUBMODULES", False) else _hooked_submodule(module)
            if hooked:
                return None, (f"matches {cls.__name__} but its submodule '{hooked}' has forward "
                              f"or backward hooks, which the fused kernels would not run")
            candidate = _adopt(cls, module)
            spec = candidate.gate_spec()
            if isinstance(spec, str):
                return None, f"matches {cls.__name__} but {spec}"
            why = _probe_mismatch(module, candidate)
            if why:
                mismatch = mismatch or why
                continue
            _carry_instance_state(module, candidate)
            candidate.__dict__[_ORIGINAL] = module  # for revert; not a registered submodule
            return candidate, None
        names = " / ".join(c.__name__ for c in classes)
        return None, f"matches {names} structurally but {mismatch}"
    return None, None


# Attention modules of kinds with no fused kernel yet, by class name.
_UNSUPPORTED_KINDS = [(r"^BAM(Block)?$", "BAM"),
                      (r"^(DANet|DAHead)$", "DANet"),
                      (r"^BiLevelRoutingAttention", "BiFormer routing attention"),
                      (r"^ShuffleAttention$", "Shuffle Attention"), (r"^PSA$", "PSA")]
_FUSED_TITLES = ", ".join(f.title for f in _EVERY_FAMILY)
# a class name that says attention (Attention, Attn; not Flatten)
_ATTENTION_NAME = re.compile(r"attention|attn", re.IGNORECASE)


def _lookalike_reason(module: nn.Module) -> Optional[str]:
    """Why a module whose class name says attention, or that a family knows
    but cannot replace, and that nothing inside was converted, is left alone
    (None: neither)."""
    for family in _EVERY_FAMILY:
        reason = getattr(family.convert, "left_alone_reason", None)
        why = reason(module) if reason else None
        if why:
            return why
    name = type(module).__name__
    for pattern, kind in _UNSUPPORTED_KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return (f"a {kind} module: no fused kernel for this kind yet (fused: "
                    f"{_FUSED_TITLES})")
    for family in _EVERY_FAMILY:
        if family.looks_like(name):
            return f"looks like {family.title} but its structure matches no known flavour"
    if _ATTENTION_NAME.search(name):
        return "an attention module of no kind attnkernels knows, with none known inside"
    return None



def convert(model: nn.Module) -> Tuple[nn.Module, ConversionReport]:
    """Replace every known attention module in ``model`` (in place) by its fused
    version. Returns the model (a new object only when the root itself was
    converted) and a report of what was converted and what was left alone, and why."""
    report = ConversionReport()
    holder = nn.Module()  # the root converts like any child
    holder.add_module("root", model)
    _convert_children(holder, "", report, rename={"root": ""})
    return holder.root, report


def _convert_children(parent: nn.Module, prefix: str, report: ConversionReport,
                      rename: Optional[dict] = None) -> bool:
    """Converts below ``parent``; True when something there was converted or reported.
    A module whose name alone says attention is reported only when nothing inside
    it was: a residual block or a whole network that holds converted attention
    modules is a container, not an attention module left alone."""
    touched = False
    for name, child in list(parent.named_children()):
        if isinstance(child, _FUSED):  # converted already
            continue
        path = (rename or {}).get(name, f"{prefix}.{name}" if prefix else name)
        new, why = _try_convert(child)
        if new is not None:
            setattr(parent, name, new)
            report.converted.append((path, type(child).__name__, type(new).__name__))
            touched = True
            continue
        at = len(report.left_alone)  # a module's line before its children's
        converted_before = len(report.converted)
        inner = _convert_children(child, path, report)
        why = why or (None if inner else _lookalike_reason(child))
        if why:
            report.left_alone.insert(at, (path, type(child).__name__, why))
        elif _ATTENTION_NAME.search(type(child).__name__):
            held = len(report.converted) - converted_before
            if held:
                report.containers.append((path, type(child).__name__, held))
        touched = touched or inner or bool(why)
    return touched


def revert(model: nn.Module) -> Tuple[nn.Module, ConversionReport]:
    """Undo ``convert`` (in place): every module it replaced gets its original
    instance back, of the original class, holding the fused module's current
    submodules (the same parameter objects, trained or moved since), training
    flag, hooks and carried attributes. For checkpoints that must load without
    attnkernels and exporters that expect the upstream classes. Fused modules
    that ``convert`` did not make (built as drop-ins, or by the timm
    integration) have no original to restore: reported as left alone."""
    report = ConversionReport(verb="reverted")
    holder = nn.Module()
    holder.add_module("root", model)
    for path, parent, name, fused in list(_fused_modules(holder, "")):
        path = path[len("root."):] if path.startswith("root.") else ""
        original = fused.__dict__.get(_ORIGINAL)
        if original is None:
            report.left_alone.append((path, type(fused).__name__,
                                      "built fused, not by convert: no original to restore"))
            continue
        original._modules.clear()  # the fused module's children now, in their order
        original._modules.update(fused._modules)
        original._parameters.update(fused._parameters)  # its own (the same objects unless
        original._buffers.update(fused._buffers)        # replaced since)
        for key, value in vars(fused).items():
            if key in vars(original) and key not in _MODULE_STATE and key != _ORIGINAL:
                original.__dict__[key] = value
        for table in _HOOK_TABLES:
            setattr(original, table, getattr(fused, table))
        original.training = fused.training
        setattr(parent, name, original)
        report.converted.append((path, type(fused).__name__, type(original).__name__))
    return holder.root, report


def _fused_modules(parent: nn.Module, prefix: str):
    """(path, parent, name, module) of every fused module below ``parent``, outermost first."""
    for name, child in parent.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, _FUSED):
            yield path, parent, name, child
        else:
            yield from _fused_modules(child, path)
