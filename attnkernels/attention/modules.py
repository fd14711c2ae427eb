"""Drop-in attention modules: each is its reference class (same constructor,
submodules and state_dict keys) whose attention product goes to
``attention_core`` with the module's ``path`` (None: by device; see
``functional.pick_path``). The 1x1 and depthwise convolutions stay the
original submodules, called as they are (hooks on them run)."""
from typing import Optional, Tuple

from torch import nn

from .._core.modules import reference_module
from . import reference as ref
from .functional import PATHS, attention_core

__all__ = ["DotProductAttention", "UltralyticsAttention", "UltralyticsAreaAttention"]


class DotProductAttention(nn.Module):
    """Root of the drop-in attention modules. ``path``: ``"explicit"``,
    ``"sdpa"`` or None (by device), per module."""

    path: Optional[str] = None
    # the forward calls the submodules (convert may take modules whose
    # submodules carry hooks: they still run)
    CALLS_SUBMODULES = True
    ADOPTED_ATTRS: Tuple[str, ...] = ()  # the plain attributes the forward reads
    WHOLE_NUMBERS: Tuple[str, ...] = ()   # those of them that are counts

    def __setattr__(self, name, value):
        if name == "path" and value is not None and value not in PATHS:
            raise ValueError(f"path must be one of {PATHS} or None, got {value!r}")
        super().__setattr__(name, value)

    def scale_of(self) -> float:
        raise NotImplementedError

    def attend(self, q, k, v):
        return attention_core(q, k, v, self.scale_of(), self.path)

    def gate_spec(self):
        """{} when the counts the forward reads are positive ints (convert's
        check), else the reason."""
        for name in self.WHOLE_NUMBERS:
            value = getattr(self, name, None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"its {name} is {value!r}, not a positive int"
        return {}

    def probe_channels(self) -> Optional[int]:
        return self.num_heads * self.head_dim

    def probe_size(self) -> Tuple[int, int]:
        return (5, 7)

    def reference_module(self) -> nn.Module:
        return reference_module(self)


class UltralyticsAttention(DotProductAttention, ref.UltralyticsAttention):
    """Ultralytics ``Attention(dim, num_heads=8, attn_ratio=0.5)`` (PSA, C2PSA)."""

    ADOPTED_ATTRS = ("num_heads", "head_dim", "key_dim", "scale")
    WHOLE_NUMBERS = ("num_heads", "head_dim", "key_dim")

    def scale_of(self) -> float:
        return self.scale  # key_dim ** -0.5, as the original reads it

    def gate_spec(self):
        why = super().gate_spec()
        if not why and not isinstance(getattr(self, "scale", None), float):
            return f"its scale is {getattr(self, 'scale', None)!r}, not a float"
        return why


class UltralyticsAreaAttention(DotProductAttention, ref.UltralyticsAreaAttention):
    """Ultralytics ``AAttn(dim, num_heads, area=1)`` (A2C2f)."""

    ADOPTED_ATTRS = WHOLE_NUMBERS = ("area", "num_heads", "head_dim", "all_head_dim")

    def scale_of(self) -> float:
        return self.head_dim ** -0.5

    def gate_spec(self):
        if "all_head_dim" not in vars(self) and isinstance(getattr(self, "head_dim", None), int) \
                and isinstance(getattr(self, "num_heads", None), int):
            # checkpoints older than the attribute (upstream's __setstate__ adds it so)
            self.all_head_dim = self.head_dim * self.num_heads
        return super().gate_spec()

    def probe_size(self) -> Tuple[int, int]:
        return (4, 2 * self.area)  # N = 8 * area tokens: whole bands
