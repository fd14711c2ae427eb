"""Structure tests the families' conversion matchers share."""
from typing import Optional

from torch import nn


def is_conv1x1(m, cin=None, cout=None) -> bool:
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1)
            and m.padding == (0, 0) and m.dilation == (1, 1) and m.groups == 1
            and (cin is None or m.in_channels == cin) and (cout is None or m.out_channels == cout))


def is_global_avgpool(m) -> bool:
    return isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))


# nn.Module's tables of forward / backward hooks (not the state_dict ones)
CALL_HOOK_TABLES = tuple(k for k in sorted(vars(nn.Module())) if k.endswith("hooks")
                         and "state_dict" not in k)


def has_call_hooks(m: nn.Module) -> bool:
    """Whether m has forward or backward hooks of its own (a rewrite that uses
    m's parameters instead of calling it would skip them)."""
    return any(getattr(m, table) for table in CALL_HOOK_TABLES)


def children_of(m):
    return dict(m.named_children())


def has_children(m, names) -> bool:
    return isinstance(m, nn.Module) and set(children_of(m)) == set(names)


def parameter_channels(m: nn.Module) -> Optional[int]:
    """The input channels of m's first parameter (its shape[1]), or None."""
    p = next(iter(m.parameters()), None)
    if p is None:
        return None
    return p.shape[1] if p.dim() > 1 else None
