"""How upstream CBAM modules become this family's drop-in modules:
structure matchers for ``attnkernels.convert`` and timm's names and classes
for ``attnkernels.integrations.timm``."""
import copy
from typing import Optional

import torch
from torch import nn

from .._core.matching import children_of, has_children, is_conv1x1, parameter_channels
from .modules import (CBAM, CBAMBlock, CBAMBlockFc, CbamModule, ExternalCBAMBlock, LightCbamModule,
                      LinearCBAM, OfficialCBAM, UltralyticsCBAM,
                      UltralyticsSpatialAttention)


def _match_cbam_seed(m):
    ch = children_of(m)
    if set(ch) == {"ca", "sa"}:
        ca, sa = ch["ca"], ch["sa"]
        if (has_children(ca, {"avg_pool", "max_pool", "fc1", "relu1", "fc2", "sigmoid"})
                and has_children(sa, {"conv1", "sigmoid"})):
            return CBAM
    if set(ch) == {"channelattention", "spatialattention"}:
        ca, sa = ch["channelattention"], ch["spatialattention"]
        if (has_children(ca, {"avg_pool", "max_pool", "fc", "sigmoid"})
                and isinstance(ca.fc, nn.Sequential) and len(ca.fc) == 3
                and has_children(sa, {"conv", "sigmoid"})):
            return CBAMBlock
        if (has_children(ca, {"avg_pool", "max_pool", "fc1", "relu1", "fc2", "sigmoid"})
                and has_children(sa, {"conv1", "sigmoid"})):
            return CBAMBlockFc
    return None


def _match_cbam_official(m):
    ch = children_of(m)
    if set(ch) not in ({"ChannelGate", "SpatialGate"}, {"ChannelGate"}):
        return None
    gate = ch["ChannelGate"]
    if not (hasattr(gate, "pool_types") and has_children(gate, {"mlp"})
            and isinstance(gate.mlp, nn.Sequential) and len(gate.mlp) == 4):
        return None
    if "SpatialGate" in ch:
        sg = ch["SpatialGate"]
        if not (has_children(sg, {"compress", "spatial"}) and hasattr(sg.spatial, "conv")
                and hasattr(sg.spatial, "bn")):
            return None
    elif not getattr(m, "no_spatial", False):
        return None
    return OfficialCBAM


def _match_cbam_timm(m):
    ch = children_of(m)
    if set(ch) != {"channel", "spatial"}:
        return None
    channel, spatial = ch["channel"], ch["spatial"]
    if not (has_children(channel, {"fc1", "act", "fc2", "gate"})
            and has_children(spatial, {"conv", "gate"})):
        return None
    conv = spatial.conv
    if not (isinstance(getattr(conv, "conv", None), nn.Conv2d)
            and isinstance(getattr(conv, "bn", None), nn.BatchNorm2d)):
        return None
    return LightCbamModule if conv.conv.in_channels == 1 else CbamModule


def _match_cbam_ultralytics(m):
    ch = children_of(m)
    if set(ch) != {"channel_attention", "spatial_attention"}:
        return None
    if (has_children(ch["channel_attention"], {"pool", "fc", "act"})
            and has_children(ch["spatial_attention"], {"cv1", "act"})):
        return UltralyticsCBAM
    return None


def _match_spatial_ultralytics(m):
    # ultralytics' SpatialAttention alone: cv1 a Conv2d(2, 1, k), act
    ch = children_of(m)
    if set(ch) == {"cv1", "act"} and isinstance(ch["cv1"], nn.Conv2d) \
            and ch["cv1"].in_channels == 2 and ch["cv1"].out_channels == 1:
        return UltralyticsSpatialAttention
    return None


def _match_cbam_linear(m):
    ch = children_of(m)
    if set(ch) != {"channel_attention", "spatial_attention"}:
        return None
    ca, sa = ch["channel_attention"], ch["spatial_attention"]
    if not (has_children(ca, {"avg_pool", "max_pool", "fc", "sigmoid"})
            and has_children(sa, {"conv", "sigmoid"})):
        return None
    fc = ca.fc
    if (isinstance(fc, nn.Sequential) and len(fc) == 3 and isinstance(fc[0], nn.Linear)
            and isinstance(fc[2], nn.Linear)):
        return LinearCBAM
    return None


def _match_cbam_external(m):
    ch = children_of(m)
    if set(ch) != {"ca", "sa"}:
        return None
    ca, sa = ch["ca"], ch["sa"]
    if not (has_children(ca, {"maxpool", "avgpool", "se", "sigmoid"})
            and has_children(sa, {"conv", "sigmoid"})):
        return None
    se = ca.se
    if isinstance(se, nn.Sequential) and len(se) == 3 and is_conv1x1(se[0]) and is_conv1x1(se[2]):
        return ExternalCBAMBlock
    return None


# The CBAM halves that return their gate and leave x * gate to the caller
# (seed 000's ChannelAttention / SpatialAttention, External-Attention's):
# nothing to swap in for them, whatever the name.
_BARE_GATES = [({"avg_pool", "max_pool", "fc1", "relu1", "fc2", "sigmoid"}, "channel"),
               ({"avg_pool", "max_pool", "fc", "sigmoid"}, "channel"),
               ({"maxpool", "avgpool", "se", "sigmoid"}, "channel"),
               ({"conv1", "sigmoid"}, "spatial"), ({"conv", "sigmoid"}, "spatial")]


def left_alone_reason(module: nn.Module) -> Optional[str]:
    """Why a bare CBAM gate is left alone (None: it is not one)."""
    names = set(children_of(module))
    for children, kind in _BARE_GATES:
        if names != children:
            continue
        convs = [m for m in module.children() if isinstance(m, nn.Conv2d)]
        if kind == "spatial" and not (convs and convs[0].in_channels == 2):
            continue
        try:  # a gate: its output has a singleton axis where x has none
            ch = 6 if kind == "spatial" else (parameter_channels(module) or 0)
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


# In the order they are tried.
MATCHERS = (_match_cbam_seed, _match_cbam_official, _match_cbam_timm, _match_cbam_ultralytics,
            _match_spatial_ultralytics,
            _match_cbam_linear, _match_cbam_external)


def timm_names():
    return {"cbam": CbamModule, "lcbam": LightCbamModule}


def timm_classes():
    from timm.layers import cbam

    return {cbam.CbamModule: CbamModule, cbam.LightCbamModule: LightCbamModule}
