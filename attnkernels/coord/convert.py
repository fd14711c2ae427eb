"""How upstream Coordinate Attention modules become this family's drop-in modules:
structure matchers for ``attnkernels.convert`` and timm's names and classes
for ``attnkernels.integrations.timm``."""


from .._core.matching import children_of, is_conv1x1
from .modules import CA_Block, CoordAtt, CoordAttGroups, CoordAttn


def _match_coord(m):
    ch = children_of(m)
    names = set(ch)
    convs_1x1 = lambda *ns: all(is_conv1x1(ch[n]) for n in ns)  # noqa: E731
    if names == {"pool_h", "pool_w", "conv1", "bn1", "act", "conv_h", "conv_w"}:
        return CoordAtt if convs_1x1("conv1", "conv_h", "conv_w") else None
    if names == {"pool_h", "pool_w", "conv1", "bn1", "conv2", "conv3", "relu"}:
        return CoordAttGroups if convs_1x1("conv1", "conv2", "conv3") else None
    if names == {"avg_pool_x", "avg_pool_y", "conv_1x1", "relu", "bn", "F_h", "F_w", "sigmoid_h",
                 "sigmoid_w"} and hasattr(m, "h") and hasattr(m, "w"):
        return CA_Block if convs_1x1("conv_1x1", "F_h", "F_w") else None
    if names == {"conv1", "bn1", "act", "conv_h", "conv_w", "gate"} and hasattr(m, "has_skip"):
        return CoordAttn if convs_1x1("conv1", "conv_h", "conv_w") else None
    return None


# In the order they are tried.
MATCHERS = (_match_coord,)


def timm_names():
    return {"coord": CoordAttn}


def timm_classes():
    from timm.layers import coord_attn

    return {coord_attn.CoordAttn: CoordAttn}
