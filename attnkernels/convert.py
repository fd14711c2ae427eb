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

from . import nn as fused


@dataclasses.dataclass
class ConversionReport:
    converted: List[Tuple[str, str, str]] = dataclasses.field(default_factory=list)
    left_alone: List[Tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} module(s), left {len(self.left_alone)} alone"]
        lines += [f"  converted  {n or '<root>'}: {a} -> {b}" for n, a, b in self.converted]
        lines += [f"  left alone {n or '<root>'}: {a}: {why}" for n, a, why in self.left_alone]
        return "\n".join(lines)


def _is_conv1x1(m, cin=None, cout=None) -> bool:
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1)
            and m.padding == (0, 0) and m.dilation == (1, 1) and m.groups == 1
            and (cin is None or m.in_channels == cin) and (cout is None or m.out_channels == cout))


def _is_global_avgpool(m) -> bool:
    return isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))


def _children(m):
    return dict(m.named_children())


# Each matcher returns the fused class for a structurally matching module, or None.
def _match_seed(m):
    ch = _children(m)
    if set(ch) != {"avg_pool", "fc"} or not _is_global_avgpool(ch["avg_pool"]):
        return None
    fc = ch["fc"]
    if not isinstance(fc, nn.Sequential) or len(fc) != 4:
        return None
    l1, _, l2, _ = fc
    if (isinstance(l1, nn.Linear) and isinstance(l2, nn.Linear)
            and l2.in_features == l1.out_features and l2.out_features == l1.in_features):
        return fused.SELayer
    return None


def _match_torchvision(m):
    ch = _children(m)
    if set(ch) != {"avgpool", "fc1", "fc2", "activation", "scale_activation"}:
        return None
    if _is_global_avgpool(ch["avgpool"]) and _is_conv1x1(ch["fc1"]) and _is_conv1x1(
            ch["fc2"], ch["fc1"].out_channels, ch["fc1"].in_channels):
        return fused.SqueezeExcitation
    return None


def _match_timm(m):
    ch = _children(m)
    if set(ch) != {"fc1", "bn", "act", "fc2", "gate"} or not hasattr(m, "add_maxpool"):
        return None
    if _is_conv1x1(ch["fc1"]) and _is_conv1x1(ch["fc2"], ch["fc1"].out_channels,
                                              ch["fc1"].in_channels):
        return fused.SEModule
    return None


def _match_senet(m):
    ch = _children(m)  # Cadene's copy also holds a weightless avg_pool
    if set(ch) - {"avg_pool"} != {"fc1", "relu", "fc2", "sigmoid"}:
        return None
    if "avg_pool" in ch and not _is_global_avgpool(ch["avg_pool"]):
        return None
    if _is_conv1x1(ch["fc1"]) and _is_conv1x1(ch["fc2"], ch["fc1"].out_channels,
                                              ch["fc1"].in_channels):
        return fused.LegacySEModule
    return None


def _match_efficientnet(m):
    ch = _children(m)
    if set(ch) != {"conv_reduce", "act1", "conv_expand", "gate"}:
        return None
    if _is_conv1x1(ch["conv_reduce"]) and _is_conv1x1(
            ch["conv_expand"], ch["conv_reduce"].out_channels, ch["conv_reduce"].in_channels):
        return fused.EfficientNetSqueezeExcite
    return None


def _match_effective(m):
    ch = _children(m)
    if set(ch) != {"fc", "gate"} or not hasattr(m, "add_maxpool"):
        return None
    fc = ch["fc"]
    if _is_conv1x1(fc, fc.in_channels, fc.in_channels) and fc.bias is not None:
        return fused.EffectiveSEModule
    return None


def _is_channel_conv1d(m, padding: int, bias: Optional[bool] = None) -> bool:
    """ECA's conv over channels: Conv1d(1, 1, k odd), stride 1, the given padding."""
    return (isinstance(m, nn.Conv1d) and m.in_channels == 1 and m.out_channels == 1
            and m.kernel_size[0] % 2 == 1 and m.stride == (1,) and m.dilation == (1,)
            and m.groups == 1 and m.padding == (padding,) and m.padding_mode == "zeros"
            and (bias is None or (m.bias is not None) == bias))


def _match_eca_official(m):
    # eca_layer (official) and the seeds' eca_block share this structure and forward.
    ch = _children(m)
    if set(ch) != {"avg_pool", "conv", "sigmoid"} or not _is_global_avgpool(ch["avg_pool"]):
        return None
    conv = ch["conv"]
    if isinstance(conv, nn.Conv1d) and _is_channel_conv1d(conv, (conv.kernel_size[0] - 1) // 2, False):
        return fused.ECALayer
    return None


def _match_eca_attention(m):
    ch = _children(m)
    if set(ch) != {"gap", "conv", "sigmoid"} or not _is_global_avgpool(ch["gap"]):
        return None
    conv = ch["conv"]
    if isinstance(conv, nn.Conv1d) and _is_channel_conv1d(conv, (conv.kernel_size[0] - 1) // 2):
        return fused.ECAAttention
    return None


def _match_eca_timm(m):
    ch = _children(m)
    conv = ch.get("conv")
    if not isinstance(conv, nn.Conv1d):
        return None
    if set(ch) == {"conv", "gate"} and isinstance(getattr(m, "padding", None), int):
        if _is_channel_conv1d(conv, 0) and m.padding == (conv.kernel_size[0] - 1) // 2:
            return fused.CecaModule
        return None
    if set(ch) == {"conv", "gate"} and _is_channel_conv1d(conv, (conv.kernel_size[0] - 1) // 2, False):
        return fused.EcaModule
    if set(ch) == {"conv", "act", "conv2", "gate"}:  # use_mlp: recognised, has no fused kernel
        return fused.EcaModule
    return None


def _has_children(m, names) -> bool:
    return isinstance(m, nn.Module) and set(_children(m)) == set(names)


def _match_cbam_seed(m):
    ch = _children(m)
    if set(ch) == {"ca", "sa"}:
        ca, sa = ch["ca"], ch["sa"]
        if (_has_children(ca, {"avg_pool", "max_pool", "fc1", "relu1", "fc2", "sigmoid"})
                and _has_children(sa, {"conv1", "sigmoid"})):
            return fused.CBAM
    if set(ch) == {"channelattention", "spatialattention"}:
        ca, sa = ch["channelattention"], ch["spatialattention"]
        if (_has_children(ca, {"avg_pool", "max_pool", "fc", "sigmoid"})
                and isinstance(ca.fc, nn.Sequential) and len(ca.fc) == 3
                and _has_children(sa, {"conv", "sigmoid"})):
            return fused.CBAMBlock
        if (_has_children(ca, {"avg_pool", "max_pool", "fc1", "relu1", "fc2", "sigmoid"})
                and _has_children(sa, {"conv1", "sigmoid"})):
            return fused.CBAMBlockFc
    return None


def _match_cbam_official(m):
    ch = _children(m)
    if set(ch) not in ({"ChannelGate", "SpatialGate"}, {"ChannelGate"}):
        return None
    gate = ch["ChannelGate"]
    if not (hasattr(gate, "pool_types") and _has_children(gate, {"mlp"})
            and isinstance(gate.mlp, nn.Sequential) and len(gate.mlp) == 4):
        return None
    if "SpatialGate" in ch:
        sg = ch["SpatialGate"]
        if not (_has_children(sg, {"compress", "spatial"}) and hasattr(sg.spatial, "conv")
                and hasattr(sg.spatial, "bn")):
            return None
    elif not getattr(m, "no_spatial", False):
        return None
    return fused.OfficialCBAM


def _match_cbam_timm(m):
    ch = _children(m)
    if set(ch) != {"channel", "spatial"}:
        return None
    channel, spatial = ch["channel"], ch["spatial"]
    if not (_has_children(channel, {"fc1", "act", "fc2", "gate"})
            and _has_children(spatial, {"conv", "gate"})):
        return None
    conv = spatial.conv
    if not (isinstance(getattr(conv, "conv", None), nn.Conv2d)
            and isinstance(getattr(conv, "bn", None), nn.BatchNorm2d)):
        return None
    return fused.LightCbamModule if conv.conv.in_channels == 1 else fused.CbamModule


def _match_cbam_ultralytics(m):
    ch = _children(m)
    if set(ch) != {"channel_attention", "spatial_attention"}:
        return None
    if (_has_children(ch["channel_attention"], {"pool", "fc", "act"})
            and _has_children(ch["spatial_attention"], {"cv1", "act"})):
        return fused.UltralyticsCBAM
    return None


def _match_cbam_linear(m):
    ch = _children(m)
    if set(ch) != {"channel_attention", "spatial_attention"}:
        return None
    ca, sa = ch["channel_attention"], ch["spatial_attention"]
    if not (_has_children(ca, {"avg_pool", "max_pool", "fc", "sigmoid"})
            and _has_children(sa, {"conv", "sigmoid"})):
        return None
    fc = ca.fc
    if (isinstance(fc, nn.Sequential) and len(fc) == 3 and isinstance(fc[0], nn.Linear)
            and isinstance(fc[2], nn.Linear)):
        return fused.LinearCBAM
    return None


def _match_cbam_external(m):
    ch = _children(m)
    if set(ch) != {"ca", "sa"}:
        return None
    ca, sa = ch["ca"], ch["sa"]
    if not (_has_children(ca, {"maxpool", "avgpool", "se", "sigmoid"})
            and _has_children(sa, {"conv", "sigmoid"})):
        return None
    se = ca.se
    if isinstance(se, nn.Sequential) and len(se) == 3 and _is_conv1x1(se[0]) and _is_conv1x1(se[2]):
        return fused.ExternalCBAMBlock
    return None


def _match_ultralytics_channel(m):
    ch = _children(m)
    if set(ch) != {"pool", "fc", "act"} or not _is_global_avgpool(ch["pool"]):
        return None
    fc = ch["fc"]
    if _is_conv1x1(fc, fc.in_channels, fc.in_channels) and fc.bias is not None:
        return fused.UltralyticsChannelAttention
    return None


def _match_coord(m):
    ch = _children(m)
    names = set(ch)
    convs_1x1 = lambda *ns: all(_is_conv1x1(ch[n]) for n in ns)  # noqa: E731
    if names == {"pool_h", "pool_w", "conv1", "bn1", "act", "conv_h", "conv_w"}:
        return fused.CoordAtt if convs_1x1("conv1", "conv_h", "conv_w") else None
    if names == {"pool_h", "pool_w", "conv1", "bn1", "conv2", "conv3", "relu"}:
        return fused.CoordAttGroups if convs_1x1("conv1", "conv2", "conv3") else None
    if names == {"avg_pool_x", "avg_pool_y", "conv_1x1", "relu", "bn", "F_h", "F_w", "sigmoid_h",
                 "sigmoid_w"} and hasattr(m, "h") and hasattr(m, "w"):
        return fused.CA_Block if convs_1x1("conv_1x1", "F_h", "F_w") else None
    if names == {"conv1", "bn1", "act", "conv_h", "conv_w", "gate"} and hasattr(m, "has_skip"):
        return fused.CoordAttn if convs_1x1("conv1", "conv_h", "conv_w") else None
    return None


def _is_basic_conv(m) -> bool:
    """The official repos' BasicConv: conv, bn (or None), relu (or None)."""
    return isinstance(getattr(m, "conv", None), nn.Conv2d) and hasattr(m, "bn") and hasattr(m, "relu")


def _match_triplet(m):
    ch = _children(m)
    names = set(ch)
    no_spatial = getattr(m, "no_spatial", None)
    if no_spatial is None:
        return None
    official, legacy = ["cw", "hc", "hw"], ["ChannelGateH", "ChannelGateW", "SpatialGate"]
    for branches, conv_attr, cls in ((official, "conv", fused.TripletAttention),
                                     (legacy, "spatial", fused.LegacyTripletAttention)):
        if names != set(branches[:2] if no_spatial else branches):
            continue
        if all(_has_children(ch[b], {"compress", conv_attr})
               and _is_basic_conv(getattr(ch[b], conv_attr)) for b in names):
            return cls
    return None


MATCHERS: List[Callable] = [_match_seed, _match_torchvision, _match_timm, _match_senet,
                            _match_efficientnet, _match_effective, _match_eca_official,
                            _match_eca_attention,
                            _match_eca_timm, _match_cbam_seed, _match_cbam_official,
                            _match_cbam_timm, _match_cbam_ultralytics, _match_cbam_linear,
                            _match_cbam_external, _match_ultralytics_channel, _match_coord,
                            _match_triplet]
# Plain (non-module) attributes the fused forward reads: add_maxpool (timm SE),
# padding (CecaModule), act/conv2 (EcaModule, None unless use_mlp), no_spatial
# (the official CBAM), h/w (the seeds' CA_Block), has_skip (timm CoordAttn).
_PLAIN_ATTRS = ("add_maxpool", "padding", "act", "conv2", "no_spatial", "h", "w", "has_skip")
_FUSED = (fused.SqueezeExcite, fused.EfficientChannelAttention, fused.ConvBlockAttention,
          fused.CoordinateAttention, fused.TripletAttentionModule)


def _adopt(cls, original: nn.Module) -> nn.Module:
    """An instance of fused class ``cls`` that shares ``original``'s submodules."""
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    for name, child in original.named_children():
        new.add_module(name, child)
    for attr in _PLAIN_ATTRS:
        if hasattr(original, attr) and attr not in original._modules:
            setattr(new, attr, getattr(original, attr))
    new.train(original.training)
    return new


def _channels(m: nn.Module) -> Optional[int]:
    if isinstance(m, fused.EfficientChannelAttention):
        return 16 + m.conv.kernel_size[0]  # any channel count works; wider than the kernel
    if isinstance(m, fused.TripletAttentionModule):
        return 6  # any channel count works
    p = next(iter(m.parameters()), None)
    if p is None:
        return None
    return p.shape[1] if p.dim() > 1 else None


def _probe_mismatch(original: nn.Module, candidate: nn.Module) -> Optional[str]:
    """Compare outputs on a probe input in float64 on deep copies (eval mode, so
    BatchNorm statistics are left untouched); None when they agree."""
    channels = _channels(candidate)
    if channels is None:
        return "cannot infer the channel count"
    a = copy.deepcopy(original).double().eval().cpu()
    b = copy.deepcopy(candidate).double().eval().cpu()
    g = torch.Generator().manual_seed(0)
    size = (b.h, b.w) if isinstance(b, fused.CA_Block) else (5, 7)  # CA_Block: fixed h, w
    x = torch.randn(2, channels, *size, generator=g, dtype=torch.float64)
    try:
        with torch.no_grad():
            ya, yb = a(x), b(x)
    except Exception as e:  # noqa: BLE001 - any failure means: do not convert
        return f"probe run failed: {type(e).__name__}: {e}"
    if ya.shape != yb.shape or not torch.allclose(ya, yb, rtol=1e-9, atol=1e-12):
        return "its output differs from the fused module's on a probe input"
    return None


def _try_convert(module: nn.Module):
    """(fused module, None), or (None, reason) for a module that matches a flavour's
    structure but cannot be converted, or (None, None)."""
    if isinstance(module, _FUSED):
        return None, None
    for matcher in MATCHERS:
        cls = matcher(module)
        if cls is None:
            continue
        candidate = _adopt(cls, module)
        spec = candidate.gate_spec()
        if isinstance(spec, str):
            return None, f"matches {cls.__name__} but {spec}"
        why = _probe_mismatch(module, candidate)
        if why:
            return None, f"matches {cls.__name__} structurally but {why}"
        return candidate, None
    return None, None


# Attention modules of kinds with no fused kernel yet, by class name.
_UNSUPPORTED_KINDS = [(r"^BAM(Block)?$", "BAM"), (r"^GAM(_?Attention)?$", "GAM"),
                      (r"^SimAM", "SimAM"), (r"^(NAM(Attention)?|Channel_Att)$", "NAM"),
                      (r"^EMA(_?(Module|Attention))?$", "EMA"),
                      (r"^(SK|SKConv|SKAttention|SelectiveKernel\w*)$", "Selective Kernel"),
                      (r"^CoT(Attention)?$", "CoT"), (r"^(DANet|DAHead|PAM_?Module|CAM_?Module)$",
                                                     "DANet"),
                      (r"^BiLevelRoutingAttention|^ShuffleAttention$|^PSA$", "another attention")]
_LOOKALIKES = [(("squeeze", "excit", "selayer", "se_", "semodule"), "squeeze-and-excitation"),
               (("eca", "efficientchannel"), "ECA"), (("cbam", "blockattention"), "CBAM"),
               (("coord",), "Coordinate Attention"), (("triplet",), "Triplet Attention")]


# The CBAM halves that return their gate and leave x * gate to the caller
# (seed 000's ChannelAttention / SpatialAttention, External-Attention's):
# nothing to swap in for them, whatever the name.
_BARE_GATES = [({"avg_pool", "max_pool", "fc1", "relu1", "fc2", "sigmoid"}, "channel"),
               ({"avg_pool", "max_pool", "fc", "sigmoid"}, "channel"),
               ({"maxpool", "avgpool", "se", "sigmoid"}, "channel"),
               ({"conv1", "sigmoid"}, "spatial"), ({"conv", "sigmoid"}, "spatial")]


def _bare_gate_reason(module: nn.Module) -> Optional[str]:
    names = set(_children(module))
    for children, kind in _BARE_GATES:
        if names != children:
            continue
        convs = [m for m in module.children() if isinstance(m, nn.Conv2d)]
        if kind == "spatial" and not (convs and convs[0].in_channels == 2):
            continue
        try:  # a gate: its output has a singleton axis where x has none
            ch = 6 if kind == "spatial" else (_channels(module) or 0)
            x = torch.randn(2, ch, 5, 7, dtype=torch.float64)
            with torch.no_grad():
                y = copy.deepcopy(module).double().eval().cpu()(x)
        except Exception:  # noqa: BLE001
            continue
        if y.dim() == 4 and y.shape != x.shape and 1 in y.shape[1:]:
            return (f"a CBAM {kind} gate on its own: it returns the gate and its caller "
                    "computes x * gate, so no drop-in module replaces it (a block that holds "
                    "both halves and multiplies inside converts)")
    return None


def _lookalike_reason(module: nn.Module) -> Optional[str]:
    """Why a module whose class name says attention, or that is a bare CBAM
    gate, and that nothing inside was converted, is left alone (None: neither)."""
    why = _bare_gate_reason(module)
    if why:
        return why
    name = type(module).__name__
    for pattern, kind in _UNSUPPORTED_KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return (f"a {kind} module: no fused kernel for this kind yet (fused: SE, ECA, CBAM, "
                    "Coordinate and Triplet Attention)")
    lower = name.lower()
    for keys, family in _LOOKALIKES:
        if any(k in lower for k in keys) or (family == "Coordinate Attention"
                                              and lower.startswith("ca_")):
            return f"looks like {family} but its structure matches no known flavour"
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
        inner = _convert_children(child, path, report)
        why = why or (None if inner else _lookalike_reason(child))
        if why:
            report.left_alone.insert(at, (path, type(child).__name__, why))
        touched = touched or inner or bool(why)
    return touched
