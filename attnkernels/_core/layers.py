"""Activation and gate vocabulary shared by every family.

The fused kernels know a closed set of activations and gates, each named by a
string; these are their PyTorch definitions (the oracle) and the mapping from
the module classes users pass (``nn.ReLU``, timm's ``'hard_sigmoid'``...)."""
import torch
import torch.nn.functional as F
from torch import nn

from .modes import Activation, Gate, codes

# The names the API takes, with the codes the kernels take (modes.py).
ACTIVATIONS = codes(Activation)
GATES = codes(Gate)


def activation(h: torch.Tensor, name: str) -> torch.Tensor:
    if name == "identity":
        return h
    if name == "relu":
        return F.relu(h)
    if name == "silu":
        return F.silu(h)
    if name == "hardswish":
        return F.hardswish(h)
    raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")


def gate(z: torch.Tensor, name: str) -> torch.Tensor:
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "hard_sigmoid":
        return F.hardsigmoid(z)
    raise ValueError(f"unknown gate {name!r}; expected one of {sorted(GATES)}")


_ACT_ALIASES = {
    "relu": "relu", "silu": "silu", "swish": "silu", "hard_swish": "hardswish",
    "hardswish": "hardswish", "h_swish": "hardswish", "identity": "identity", "none": "identity",
}
_GATE_ALIASES = {"sigmoid": "sigmoid", "hard_sigmoid": "hard_sigmoid", "hardsigmoid": "hard_sigmoid"}


def _name_of(layer) -> str:
    """A lower-case name for an activation given as a string, class or instance."""
    if layer is None:
        return "identity"
    if isinstance(layer, str):
        return layer.lower()
    cls = layer if isinstance(layer, type) else type(layer)
    return cls.__name__.lower()


def activation_name(layer) -> str:
    """Map an activation (string, class or module) to a fused activation name."""
    name = _name_of(layer)
    if name in _ACT_ALIASES:
        return _ACT_ALIASES[name]
    raise ValueError(
        f"activation {layer!r} has no fused kernel; supported: ReLU, SiLU/Swish, Hardswish, Identity"
    )


def gate_name(layer) -> str:
    """Map a gate (string, class or module) to a fused gate name."""
    name = _name_of(layer)
    if name in _GATE_ALIASES:
        return _GATE_ALIASES[name]
    raise ValueError(f"gate {layer!r} has no fused kernel; supported: Sigmoid, Hardsigmoid")


def make_act_layer(layer, inplace: bool = False) -> nn.Module:
    """timm's ``create_act_layer`` for the names we support: string, class or None."""
    if layer is None:
        return nn.Identity()
    if isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        name = layer.lower()
        table = {
            "relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "hard_swish": nn.Hardswish,
            "hardswish": nn.Hardswish, "sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid,
            "hardsigmoid": nn.Hardsigmoid, "identity": nn.Identity, "none": nn.Identity,
        }
        if name not in table:
            raise ValueError(f"unknown activation layer {layer!r}")
        layer = table[name]
    try:
        return layer(inplace=inplace)
    except TypeError:
        return layer()


def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """timm.layers.helpers.make_divisible."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def place(module: nn.Module, device=None, dtype=None) -> None:
    """timm's ``device``/``dtype`` constructor keywords, applied after construction
    (floating-point parameters and buffers take ``dtype``; counters stay integer)."""
    if device is not None or dtype is not None:
        module.to(device=device, dtype=dtype)
