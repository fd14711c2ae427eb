"""Have timm build attnkernels' fused modules directly, with no conversion step.

``register()`` points timm's attention names (``attn_layer='...'``) and
the attention classes its model builders name directly at the drop-in
classes, as each family declares them (``timm_names()`` and
``timm_classes()`` in ``attnkernels/<family>/convert.py``). These take the
same arguments and hold the same state_dict
keys, so pretrained checkpoints load as they are::

    import timm
    from attnkernels.integrations import timm as ak_timm

    ak_timm.register()                       # until ak_timm.unregister()
    model = timm.create_model("seresnet50")  # fused SE in every block
    with ak_timm.fused_attention():          # or only inside the block
        model = timm.create_model("resnet50", block_args=dict(attn_layer="triplet"))

Only timm's model-building code is patched (``get_attn`` wherever timm holds
it, and the class names in ``timm.models.*``); timm's own classes are not
modified, so ``timm.layers.SEModule`` stays the original. Models built
before ``register()`` are unchanged: use ``attnkernels.convert`` for those.
"""
import contextlib
import sys
from typing import Dict, List, Tuple

from ..families import FAMILIES

_patches: List[Tuple[object, str, object]] = []  # (module, name, original value)


def _by_name() -> Dict[str, object]:
    """timm's attn_layer names -> the drop-in classes (or constructors)."""
    return {k: v for f in FAMILIES for k, v in f.convert.timm_names().items()}


def _by_class() -> Dict[type, type]:
    """timm's classes -> the drop-in classes with the same constructor and keys."""
    return {k: v for f in FAMILIES for k, v in f.convert.timm_classes().items()}


def _fused_get_attn(original):
    by_name, by_class = _by_name(), _by_class()

    def get_attn(attn_type):
        if isinstance(attn_type, str) and attn_type.lower() in by_name:
            return by_name[attn_type.lower()]
        if isinstance(attn_type, type) and attn_type in by_class:
            return by_class[attn_type]
        return original(attn_type)

    get_attn.__wrapped__ = original
    get_attn.__doc__ = "timm's get_attn, answering attnkernels' fused classes (attnkernels.integrations.timm)."
    return get_attn


def is_registered() -> bool:
    return bool(_patches)


def register() -> None:
    """Make timm build fused attention modules from now on (idempotent)."""
    if _patches:
        return
    import timm  # noqa: F401 - loads every timm.models.* builder module
    create_attn = sys.modules["timm.layers.create_attn"]
    original_get_attn = create_attn.get_attn
    new_get_attn = _fused_get_attn(original_get_attn)
    by_class = _by_class()
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "timm" or name.startswith("timm.")):
            continue
        builder = name.startswith("timm.models.")
        for attr, value in list(vars(module).items()):
            if value is original_get_attn:
                replacement = new_get_attn
            elif builder and isinstance(value, type) and value in by_class:
                replacement = by_class[value]
            else:
                continue
            _patches.append((module, attr, value))
            setattr(module, attr, replacement)


def unregister() -> None:
    """Undo ``register()``: timm builds its own modules again."""
    while _patches:
        module, attr, value = _patches.pop()
        setattr(module, attr, value)


@contextlib.contextmanager
def fused_attention():
    """``register()`` for the duration of a ``with`` block (unless already registered)."""
    already = is_registered()
    register()
    try:
        yield
    finally:
        if not already:
            unregister()
