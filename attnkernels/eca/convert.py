"""How upstream ECA modules become this family's drop-in modules:
structure matchers for ``attnkernels.convert`` and timm's names and classes
for ``attnkernels.integrations.timm``."""
from functools import partial
from typing import Optional

from torch import nn

from .._core.matching import children_of, is_global_avgpool
from .modules import CecaModule, ECAAttention, ECALayer, EcaModule


def _is_channel_conv1d(m, padding: int, bias: Optional[bool] = None) -> bool:
    """ECA's conv over channels: Conv1d(1, 1, k odd), stride 1, the given padding."""
    return (isinstance(m, nn.Conv1d) and m.in_channels == 1 and m.out_channels == 1
            and m.kernel_size[0] % 2 == 1 and m.stride == (1,) and m.dilation == (1,)
            and m.groups == 1 and m.padding == (padding,) and m.padding_mode == "zeros"
            and (bias is None or (m.bias is not None) == bias))


def _match_eca_official(m):
    # eca_layer (official) and the seeds' eca_block share this structure and forward.
    ch = children_of(m)
    if set(ch) != {"avg_pool", "conv", "sigmoid"} or not is_global_avgpool(ch["avg_pool"]):
        return None
    conv = ch["conv"]
    if isinstance(conv, nn.Conv1d) and _is_channel_conv1d(conv, (conv.kernel_size[0] - 1) // 2, False):
        return ECALayer
    return None


def _match_eca_attention(m):
    ch = children_of(m)
    if set(ch) != {"gap", "conv", "sigmoid"} or not is_global_avgpool(ch["gap"]):
        return None
    conv = ch["conv"]
    if isinstance(conv, nn.Conv1d) and _is_channel_conv1d(conv, (conv.kernel_size[0] - 1) // 2):
        return ECAAttention
    return None


def _match_eca_timm(m):
    ch = children_of(m)
    conv = ch.get("conv")
    if not isinstance(conv, nn.Conv1d):
        return None
    if set(ch) == {"conv", "gate"} and isinstance(getattr(m, "padding", None), int):
        if _is_channel_conv1d(conv, 0) and m.padding == (conv.kernel_size[0] - 1) // 2:
            return CecaModule
        return None
    if set(ch) == {"conv", "gate"} and _is_channel_conv1d(conv, (conv.kernel_size[0] - 1) // 2, False):
        return EcaModule
    if set(ch) == {"conv", "act", "conv2", "gate"}:  # use_mlp: recognised, has no fused kernel
        return EcaModule
    return None


# In the order they are tried.
MATCHERS = (_match_eca_official, _match_eca_attention, _match_eca_timm)


def timm_names():
    return {"eca": EcaModule, "ecam": partial(EcaModule, use_mlp=True), "ceca": CecaModule}


def timm_classes():
    from timm.layers import eca

    return {eca.EcaModule: EcaModule, eca.CecaModule: CecaModule}
