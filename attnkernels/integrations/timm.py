"""Have timm build attnkernels' fused modules directly, with no conversion step.

``register()`` points timm's attention names (``attn_layer='se'``, ``'ese'``,
``'eca'``, ``'ecam'``, ``'ceca'``, ``'cbam'``, ``'lcbam'``, ``'coord'``, and
the new ``'triplet'``) and the SE classes its model builders name directly
(EfficientNet/MobileNetV3 ``SqueezeExcite``, the legacy SENet ``SEModule``,
``SEModule``/``EffectiveSEModule`` in RegNet, TResNet, ReXNet, ...) at the
drop-in classes, which take the same arguments and hold the same state_dict
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
from functools import partial
from typing import Dict, List, Tuple

from .. import nn as fused

_patches: List[Tuple[object, str, object]] = []  # (module, name, original value)


def triplet(channels=None, no_spatial: bool = False, kernel_size: int = 7, device=None,
            dtype=None) -> fused.TripletAttention:
    """timm-style constructor for the official Triplet Attention (``attn_layer='triplet'``):
    takes the block's channel count first, as timm's attention layers do, and ignores it."""
    m = fused.TripletAttention(no_spatial=no_spatial, kernel_size=kernel_size)
    return m.to(device=device, dtype=dtype) if device is not None or dtype is not None else m


def _by_name() -> Dict[str, object]:
    return {"se": fused.SEModule, "ese": fused.EffectiveSEModule, "eca": fused.EcaModule,
            "ecam": partial(fused.EcaModule, use_mlp=True), "ceca": fused.CecaModule,
            "cbam": fused.CbamModule, "lcbam": fused.LightCbamModule, "coord": fused.CoordAttn,
            "triplet": triplet}


def _by_class() -> Dict[type, type]:
    """timm's classes -> the drop-in classes with the same constructor and keys."""
    import timm.models._efficientnet_blocks as blocks
    import timm.models.senet as senet
    from timm.layers import cbam, coord_attn, eca, squeeze_excite

    return {squeeze_excite.SEModule: fused.SEModule,
            squeeze_excite.EffectiveSEModule: fused.EffectiveSEModule,
            eca.EcaModule: fused.EcaModule, eca.CecaModule: fused.CecaModule,
            cbam.CbamModule: fused.CbamModule, cbam.LightCbamModule: fused.LightCbamModule,
            coord_attn.CoordAttn: fused.CoordAttn,
            blocks.SqueezeExcite: fused.EfficientNetSqueezeExcite,
            senet.SEModule: fused.LegacySEModule}


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
