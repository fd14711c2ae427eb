"""attnkernels.integrations.timm: timm.create_model builds fused modules directly."""
import copy

import pytest
import timm
import torch

from attnkernels import nn as fnn
from attnkernels.integrations import timm as ak_timm
from attnkernels._core.modules import FusedFamily

from bench.networks import attention_paths, make_attention_matter, triplet_layer
from utils import WHOLE_NETWORK, assert_matches_oracle, nudged

# attn_layer name -> the fused class timm then builds
ATTN_LAYERS = {"se": fnn.SEModule, "ese": fnn.EffectiveSEModule, "eca": fnn.EcaModule,
               "ecam": fnn.EcaModule, "ceca": fnn.CecaModule, "cbam": fnn.CbamModule,
               "lcbam": fnn.LightCbamModule, "coord": fnn.CoordAttn, "triplet": fnn.TripletAttention}
MODELS = {"seresnet50": fnn.SEModule, "legacy_seresnet18": fnn.LegacySEModule,
          "ecaresnet50d": fnn.EcaModule, "efficientnet_b0": fnn.EfficientNetSqueezeExcite,
          "mobilenetv3_large_100": fnn.EfficientNetSqueezeExcite, "regnety_002": fnn.SEModule}


def _fused_modules(model):
    return {n: type(m) for n, m in model.named_modules() if isinstance(m, FusedFamily)}


def _same_model_as_timm_builds_it(fused_model, build):
    """timm's own build of the same model, holding ``fused_model``'s weights."""
    assert not ak_timm.is_registered()
    original = build()
    original.load_state_dict(fused_model.state_dict(), strict=True)
    assert list(original.state_dict()) == list(fused_model.state_dict())
    return original


def _assert_same_outputs(fused_model, original):
    x = torch.randn(2, 3, 64, 64)
    make_attention_matter(original, x)
    fused_model.load_state_dict(original.state_dict())
    fused_model.eval()
    with torch.no_grad():
        y_f, y_e, y_n = fused_model(x), original(x), original(nudged(x))
        y_o = copy.deepcopy(original).double()(x.double())
    assert_matches_oracle(y_f, y_e, y_o, "y", y_n, WHOLE_NETWORK)


@pytest.mark.parametrize("attn_layer", list(ATTN_LAYERS))
def test_attn_layer_names_build_fused_modules(attn_layer):
    def build(layer):
        return timm.create_model("resnet18", block_args=dict(attn_layer=layer))

    with ak_timm.fused_attention():
        fused_model = build(attn_layer)
    fused = _fused_modules(fused_model)
    assert len(fused) == 8 and set(fused.values()) == {ATTN_LAYERS[attn_layer]}
    assert not attention_paths(fused_model)
    # timm has no 'triplet': the unfused twin holds the official reference module.
    original = _same_model_as_timm_builds_it(
        fused_model, lambda: build(triplet_layer if attn_layer == "triplet" else attn_layer))
    assert attention_paths(original) == set(fused)
    _assert_same_outputs(fused_model, original)


@pytest.mark.parametrize("name", list(MODELS))
def test_registered_models_are_fused(name):
    ak_timm.register()
    try:
        fused_model = timm.create_model(name)
    finally:
        ak_timm.unregister()
    fused = _fused_modules(fused_model)
    assert fused and set(fused.values()) == {MODELS[name]}
    assert not attention_paths(fused_model)
    original = _same_model_as_timm_builds_it(fused_model, lambda: timm.create_model(name))
    assert attention_paths(original) == set(fused)
    _assert_same_outputs(fused_model, original)


def test_register_is_idempotent_undone_and_leaves_timm_classes_alone():
    se_class = timm.layers.SEModule
    get_attn = timm.layers.get_attn
    ak_timm.register()
    ak_timm.register()
    try:
        assert timm.layers.SEModule is se_class  # timm's public classes stay timm's
        assert timm.layers.get_attn("se") is fnn.SEModule
        assert timm.layers.get_attn(se_class) is fnn.SEModule
        assert timm.layers.get_attn("gc") is timm.layers.GlobalContext  # not ours: timm's
    finally:
        ak_timm.unregister()
    assert timm.layers.get_attn is get_attn and timm.layers.get_attn("se") is se_class
    assert not _fused_modules(timm.create_model("seresnet50"))
    with ak_timm.fused_attention():
        with ak_timm.fused_attention():
            pass
        assert ak_timm.is_registered()  # the inner block leaves the outer registration
    assert not ak_timm.is_registered()


def test_device_and_dtype_keywords():
    with ak_timm.fused_attention():
        model = timm.create_model("resnet18", block_args=dict(attn_layer="cbam"),
                                  dtype=torch.float64)
    for m in model.modules():
        if isinstance(m, FusedFamily):
            assert all(p.dtype == torch.float64 for p in m.parameters())
