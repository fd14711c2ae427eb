"""The routed dot-product attention family (ultralytics Attention in PSA /
C2PSA, AAttn in A2C2f): both paths of the attention product against the
float64 reference, forward and every gradient, eval and train, in each dtype;
the path choice by device; convert, revert and the report; torch.compile and
export. (Whole ultralytics models: tests/test_ultralytics.py.)"""
import copy

import pytest
import torch

import attnkernels
from attnkernels.attention import functional as AF
from attnkernels.attention import modules as fnn
from attnkernels.attention import reference as ref
from utils import assert_matches_oracle, parameter_terms, run_module, unsettle_batch_norms

# (reference class, constructor arguments, input shape): the heads and key
# widths of YOLO11's C2PSA and YOLO12's A2C2f at small widths; odd maps; areas
# of 1, 2 and 4 bands (N divisible by the area, as upstream requires)
CASES = {
    "attention-64x2": (ref.UltralyticsAttention, (64, 2), (2, 64, 7, 5)),
    "attention-128x4-ratio1": (ref.UltralyticsAttention, (128, 4, 1.0), (2, 128, 3, 6)),
    "aattn-64x2-area1": (ref.UltralyticsAreaAttention, (64, 2, 1), (2, 64, 5, 7)),
    "aattn-64x2-area4": (ref.UltralyticsAreaAttention, (64, 2, 4), (2, 64, 8, 5)),
    "aattn-96x3-area2": (ref.UltralyticsAreaAttention, (96, 3, 2), (1, 96, 6, 3)),
}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _made(case: str, seed: int = 0) -> torch.nn.Module:
    """The case's upstream module with parameters and BatchNorm statistics
    away from their initial values (an identity BatchNorm would hide an error)."""
    cls, args, _ = CASES[case]
    torch.manual_seed(seed)
    return unsettle_batch_norms(cls(*args))


def _converted(upstream: torch.nn.Module) -> torch.nn.Module:
    fused, report = attnkernels.convert(copy.deepcopy(upstream))
    assert isinstance(fused, fnn.DotProductAttention), str(report)
    return fused


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", AF.PATHS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_float64_reference(case, path, dtype, train):
    """Output, input gradient, every parameter's gradient and the BatchNorm
    statistics afterwards: the converted module on ``path`` against the
    float64 original, within twice the original's own error in ``dtype``."""
    upstream = _made(case).train(train)
    fused = _converted(upstream).to(dtype)
    fused.path = path
    eager = copy.deepcopy(upstream).to(dtype)
    oracle = copy.deepcopy(upstream).double()
    shape = CASES[case][2]
    g = torch.Generator().manual_seed(1)
    x, dy = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    y_o, dx_o, dw_o = run_module(oracle, x.double(), dy.double())
    y_e, dx_e, dw_e = run_module(eager, x.to(dtype), dy.to(dtype))
    y_f, dx_f, dw_f = run_module(fused, x.to(dtype), dy.to(dtype))
    assert_matches_oracle(y_f, y_e, y_o, "y")
    assert_matches_oracle(dx_f, dx_e, dx_o, "dx")
    for name, g_o in dw_o.items():
        assert_matches_oracle(dw_f[name], dw_e[name], g_o, name, terms=parameter_terms(shape))
    for (name, b_f), b_o, b_e in zip(fused.named_buffers(), oracle.buffers(), eager.buffers()):
        if b_f.is_floating_point():
            assert_matches_oracle(b_f, b_e, b_o, name)
        else:
            assert torch.equal(b_f, b_e), name  # num_batches_tracked


def test_paths_agree_in_float64():
    """The two paths are one function: in float64 they agree to rounding."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 16, 40, generator=g, dtype=torch.float64).unbind(0)
    v = torch.randn(3, 32, 40, generator=g, dtype=torch.float64)
    a = AF.attention_core(q, k, v, 0.25, path="explicit")
    b = AF.attention_core(q, k, v, 0.25, path="sdpa")
    assert a.shape == (3, 32, 40)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_path_by_device_mode_and_layout():
    """pick_path's measured rule: on the CPU, SDPA for training and for
    inference with the head dimension innermost (YOLO12's area-split AAttn),
    explicit for inference with the tokens innermost; SDPA on CUDA unless
    deterministic algorithms are on and autograd runs."""
    tokens_inner = torch.randn(1, 2, 8, 10)                     # (..., d, N), N innermost
    heads_inner = torch.randn(1, 2, 10, 8).transpose(-2, -1)    # d innermost
    assert AF.pick_path(tokens_inner, training=False) == "explicit"
    assert AF.pick_path(heads_inner, training=False) == "sdpa"
    assert AF.pick_path(tokens_inner, training=True) == "sdpa"
    meta = torch.empty(1, 2, 8, 10, device="meta")
    assert AF.pick_path(meta, training=True) == "explicit"
    for case, want in (("attention-64x2", "explicit"), ("aattn-64x2-area4", "sdpa"),
                       ("aattn-64x2-area1", "explicit")):  # what the modules hand it, in eval
        m = _converted(_made(case)).eval()
        picked = []
        m.attend = lambda q, k, v, m=m: picked.append(AF.pick_path(q, False)) or \
            type(m).attend(m, q, k, v)
        with torch.no_grad():
            m(torch.randn(CASES[case][2]))
        assert picked == [want], case
    q = tokens_inner
    if torch.cuda.is_available():
        assert AF.pick_path(q.cuda(), training=True) == "sdpa"
        torch.use_deterministic_algorithms(True)
        try:
            assert AF.pick_path(q.cuda(), training=True) == "explicit"
            assert AF.pick_path(q.cuda(), training=False) == "sdpa"
        finally:
            torch.use_deterministic_algorithms(False)
    with pytest.raises(ValueError, match="path must be one of"):
        AF.attention_core(q, q, q, 1.0, path="flash")
    m = _converted(_made("attention-64x2"))
    with pytest.raises(ValueError, match="path must be one of"):
        m.path = "flash"


def test_area_that_does_not_divide_the_tokens_fails_like_upstream():
    upstream = _made("aattn-64x2-area4")
    fused = _converted(upstream)
    x = torch.randn(1, 64, 5, 5)  # 25 tokens in 4 bands
    with pytest.raises(RuntimeError):
        upstream(x)
    for path in AF.PATHS:
        fused.path = path
        with pytest.raises(RuntimeError):
            fused(x)


def test_convert_keeps_parameters_and_reverts_bitwise():
    """convert adopts the same submodules (state_dict keys and parameter
    objects), the report names the classes; revert gives the upstream class
    back; outputs are the same bits on the explicit path."""
    upstream = _made("aattn-64x2-area4").eval()
    params = {n: p for n, p in upstream.named_parameters()}
    model = torch.nn.Sequential(torch.nn.Identity(), upstream)
    model, report = attnkernels.convert(model)
    assert report.converted == [("1", "UltralyticsAreaAttention", "UltralyticsAreaAttention")]
    assert type(model[1]) is fnn.UltralyticsAreaAttention
    assert all(p is params[n] for n, p in model[1].named_parameters())
    assert list(model[1].state_dict()) == list(upstream.state_dict())
    x = torch.randn(2, 64, 8, 5)
    model[1].path = "explicit"
    y = model(x)
    model, report = attnkernels.revert(model)
    assert type(model[1]) is ref.UltralyticsAreaAttention and report.converted
    assert torch.equal(model(x), y)


def test_submodule_hooks_run_after_convert():
    """The converted module calls its submodules: a hook on one still runs,
    so convert takes such modules (the pooling families leave them alone)."""
    upstream = _made("attention-64x2").eval()
    seen = []
    upstream.pe.register_forward_hook(lambda *_: seen.append("pe"))
    fused, report = attnkernels.convert(upstream)
    assert isinstance(fused, fnn.UltralyticsAttention), str(report)
    seen.clear()
    fused(torch.randn(1, 64, 4, 4))
    assert seen == ["pe"]


def test_compiled_matches_eager_and_float64():
    """torch.compile (inductor, fullgraph) of the converted module on both
    paths: output and gradients against eager's and the float64 original's."""
    upstream = _made("aattn-64x2-area4").train()
    oracle = copy.deepcopy(upstream).double()
    shape = CASES["aattn-64x2-area4"][2]
    x, dy = torch.randn(shape), torch.randn(shape)
    y_o, dx_o, dw_o = run_module(oracle, x.double(), dy.double())
    for path in AF.PATHS:
        fused = _converted(upstream)
        fused.path = path
        eager = copy.deepcopy(fused)
        torch._dynamo.reset()
        y_c, dx_c, dw_c = run_module(fused, x, dy, torch.compile(fused, fullgraph=True))
        y_e, dx_e, dw_e = run_module(eager, x, dy)
        assert_matches_oracle(y_c, y_e, y_o, f"{path} y")
        assert_matches_oracle(dx_c, dx_e, dx_o, f"{path} dx")
        for name, g_o in dw_o.items():
            assert_matches_oracle(dw_c[name], dw_e[name], g_o, f"{path} {name}",
                                  terms=parameter_terms(shape))


@pytest.mark.parametrize("path", AF.PATHS)
def test_export_matches(path):
    """torch.export of the converted module (eval) runs as the module does."""
    fused = _converted(_made("attention-64x2").eval())
    fused.path = path
    x = torch.randn(2, 64, 7, 5)
    exported = torch.export.export(fused, (x,))
    torch.testing.assert_close(exported.module()(x), fused(x), rtol=1e-5, atol=1e-6)
