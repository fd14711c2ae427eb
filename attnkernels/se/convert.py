"""How upstream Squeeze-and-Excitation modules become this family's drop-in modules:
structure matchers for ``attnkernels.convert`` and timm's names and classes
for ``attnkernels.integrations.timm``."""
from torch import nn

from .._core.matching import children_of, is_conv1x1, is_global_avgpool
from .modules import (EffectiveSEModule, EfficientNetSqueezeExcite, LegacySEModule, SELayer,
                      SEModule, SqueezeExcitation, UltralyticsChannelAttention)


def _match_seed(m):
    ch = children_of(m)
    if set(ch) != {"avg_pool", "fc"} or not is_global_avgpool(ch["avg_pool"]):
        return None
    fc = ch["fc"]
    if not isinstance(fc, nn.Sequential) or len(fc) != 4:
        return None
    l1, _, l2, _ = fc
    if (isinstance(l1, nn.Linear) and isinstance(l2, nn.Linear)
            and l2.in_features == l1.out_features and l2.out_features == l1.in_features):
        return SELayer
    return None


def _match_torchvision(m):
    ch = children_of(m)
    if set(ch) != {"avgpool", "fc1", "fc2", "activation", "scale_activation"}:
        return None
    if is_global_avgpool(ch["avgpool"]) and is_conv1x1(ch["fc1"]) and is_conv1x1(
            ch["fc2"], ch["fc1"].out_channels, ch["fc1"].in_channels):
        return SqueezeExcitation
    return None


def _match_timm(m):
    ch = children_of(m)
    if set(ch) != {"fc1", "bn", "act", "fc2", "gate"} or not hasattr(m, "add_maxpool"):
        return None
    if is_conv1x1(ch["fc1"]) and is_conv1x1(ch["fc2"], ch["fc1"].out_channels,
                                              ch["fc1"].in_channels):
        return SEModule
    return None


def _match_senet(m):
    ch = children_of(m)  # Cadene's copy also holds a weightless avg_pool
    if set(ch) - {"avg_pool"} != {"fc1", "relu", "fc2", "sigmoid"}:
        return None
    if "avg_pool" in ch and not is_global_avgpool(ch["avg_pool"]):
        return None
    if is_conv1x1(ch["fc1"]) and is_conv1x1(ch["fc2"], ch["fc1"].out_channels,
                                              ch["fc1"].in_channels):
        return LegacySEModule
    return None


def _match_efficientnet(m):
    ch = children_of(m)
    if set(ch) != {"conv_reduce", "act1", "conv_expand", "gate"}:
        return None
    if is_conv1x1(ch["conv_reduce"]) and is_conv1x1(
            ch["conv_expand"], ch["conv_reduce"].out_channels, ch["conv_reduce"].in_channels):
        return EfficientNetSqueezeExcite
    return None


def _match_effective(m):
    ch = children_of(m)
    if set(ch) != {"fc", "gate"} or not hasattr(m, "add_maxpool"):
        return None
    fc = ch["fc"]
    if is_conv1x1(fc, fc.in_channels, fc.in_channels) and fc.bias is not None:
        return EffectiveSEModule
    return None


def _match_ultralytics_channel(m):
    ch = children_of(m)
    if set(ch) != {"pool", "fc", "act"} or not is_global_avgpool(ch["pool"]):
        return None
    fc = ch["fc"]
    if is_conv1x1(fc, fc.in_channels, fc.in_channels) and fc.bias is not None:
        return UltralyticsChannelAttention
    return None


# In the order they are tried.
MATCHERS = (_match_seed, _match_torchvision, _match_timm, _match_senet, _match_efficientnet,
            _match_effective, _match_ultralytics_channel)


def timm_names():
    """timm's ``attn_layer`` names this family's drop-in classes answer."""
    return {"se": SEModule, "ese": EffectiveSEModule}


def timm_classes():
    """timm's SE classes -> the drop-in classes with the same constructor and keys."""
    import timm.models._efficientnet_blocks as blocks
    import timm.models.senet as senet
    from timm.layers import squeeze_excite

    return {squeeze_excite.SEModule: SEModule, squeeze_excite.EffectiveSEModule: EffectiveSEModule,
            blocks.SqueezeExcite: EfficientNetSqueezeExcite, senet.SEModule: LegacySEModule}
