"""How upstream Selective Kernel modules become this family's drop-in
modules: structure matchers for ``attnkernels.convert`` and timm's class."""
from torch import nn

from .._core.matching import children_of, is_conv1x1
from .functional import MAX_BRANCHES
from .modules import SelectiveKernel, SKAttention


def _match_sk_attention(m):
    # Seed 002's SKAttention: branches ``convs``, a Linear ``fc`` (C -> d), one
    # Linear per branch in ``fcs`` (d -> C), a Softmax over dim 0. The probe in
    # convert() then checks the forward (the branch modules run as they are).
    ch = children_of(m)
    if set(ch) != {"convs", "fc", "fcs", "softmax"}:
        return None
    convs, fc, fcs = ch["convs"], ch["fc"], ch["fcs"]
    if not (isinstance(convs, nn.ModuleList) and isinstance(fcs, nn.ModuleList)
            and isinstance(fc, nn.Linear) and isinstance(ch["softmax"], nn.Softmax)):
        return None
    if not 1 <= len(convs) == len(fcs) <= MAX_BRANCHES:
        return None
    if not all(isinstance(f, nn.Linear) and f.in_features == fc.out_features
               and f.out_features == fc.in_features for f in fcs):
        return None
    return SKAttention


def _match_selective_kernel(m):
    # timm's SelectiveKernel: branches ``paths`` and the gate ``attn``
    # (fc_reduce, bn, act, fc_select: 1x1 convs and a BatchNorm2d), with the
    # plain attributes the forward reads.
    ch = children_of(m)
    if set(ch) != {"paths", "attn"} or not isinstance(ch["paths"], nn.ModuleList):
        return None
    if not all(isinstance(getattr(m, a, None), int) for a in ("num_paths", "in_channels")) or \
            not isinstance(getattr(m, "split_input", None), bool):
        return None
    attn = children_of(ch["attn"])
    if set(attn) != {"fc_reduce", "bn", "act", "fc_select"}:
        return None
    k = m.num_paths
    if not (1 <= k == len(ch["paths"]) <= MAX_BRANCHES and is_conv1x1(attn["fc_reduce"])
            and is_conv1x1(attn["fc_select"], cin=attn["fc_reduce"].out_channels)
            and attn["fc_select"].out_channels % k == 0
            and isinstance(attn["bn"], nn.BatchNorm2d)):
        return None
    return SelectiveKernel


# In the order they are tried.
MATCHERS = (_match_sk_attention, _match_selective_kernel)


def timm_names():
    """timm's ``attn_layer`` name this family's drop-in class answers."""
    return {"sk": SelectiveKernel}


def timm_classes():
    """timm's SelectiveKernel -> the drop-in class with the same constructor and keys."""
    from timm.layers import selective_kernel

    return {selective_kernel.SelectiveKernel: SelectiveKernel}
