"""How upstream attention modules become this family's drop-in modules:
structure matchers for ``attnkernels.convert`` (the forward is then checked
on a probe input, as for every family)."""
from .._core.matching import has_children
from torch import nn

from .modules import (CAM_Module, MultiHeadSelfAttention, PAM_Module, ScaledDotProductAttention,
                      SimplifiedScaledDotProductAttention, UltralyticsAreaAttention,
                      UltralyticsAttention)


def _ints(m, names) -> bool:
    return all(isinstance(getattr(m, n, None), int) and not isinstance(getattr(m, n), bool)
               for n in names)


def _match_ultralytics(m):
    # q, k and v from one 1x1 Conv, a positional-encoding Conv of v, a
    # projection: the children qkv, proj and pe, and the numbers the forward reads
    if not has_children(m, ("qkv", "proj", "pe")):
        return None
    if _ints(m, ("num_heads", "head_dim", "key_dim")) and isinstance(getattr(m, "scale", None),
                                                                   float):
        return UltralyticsAttention
    if _ints(m, ("area", "num_heads", "head_dim")):
        return UltralyticsAreaAttention
    return None


def _match_external_attention(m):
    # External-Attention-pytorch's (Simplified)ScaledDotProductAttention: Linears
    # fc_q, fc_k, fc_v (or none), fc_o, a dropout; the numbers the forward reads
    if not _ints(m, ("d_model", "d_k", "d_v", "h")):
        return None
    if has_children(m, ("fc_q", "fc_k", "fc_v", "fc_o", "dropout")):
        return ScaledDotProductAttention
    if has_children(m, ("fc_o", "dropout")):
        return SimplifiedScaledDotProductAttention
    return None


def _match_multi_head_self_attention(m):
    # seed 000: values, keys, queries (never called) and fc_out
    if has_children(m, ("values", "keys", "queries", "fc_out")) and _ints(
            m, ("embed_size", "heads", "head_dim")):
        return MultiHeadSelfAttention
    return None


def _match_danet_official(m):
    # junfu1115/DANet: a one-element gamma and a softmax, with q/k/v 1x1 convs
    # (PAM_Module) or nothing else (CAM_Module)
    gamma = getattr(m, "gamma", None)
    if not (isinstance(gamma, nn.Parameter) and gamma.numel() == 1):
        return None
    if has_children(m, ("query_conv", "key_conv", "value_conv", "softmax")):
        return PAM_Module
    if has_children(m, ("softmax",)):
        return CAM_Module
    return None


# In the order they are tried.
MATCHERS = (_match_ultralytics, _match_external_attention, _match_multi_head_self_attention,
            _match_danet_official)
