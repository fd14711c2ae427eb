"""The routed dot-product attention family (ultralytics Attention in PSA /
C2PSA, AAttn in A2C2f): both paths of the attention product against the
float64 reference, forward and every gradient, eval and train, in each dtype;
the path choice by device; convert, revert and the report; torch.compile and
export. (Whole ultralytics models: tests/test_ultralytics.py.)"""
import copy

import pytest
import torch

import attnkernels
from attnkernels.attention import channel as AF_channel
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


# --- token-major attention: External-Attention-pytorch (seed 002), seed 000, DANet ---

def _spread(module: torch.nn.Module) -> torch.nn.Module:
    """Weights of unit gain (the seeds' N(0, 0.001) Linears make every
    attention weight 1/N, which would hide a wrong scale or mask)."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            fan_in = m.weight[0].numel()
            torch.nn.init.normal_(m.weight, std=fan_in ** -0.5)
            if m.bias is not None:
                torch.nn.init.normal_(m.bias, std=0.3)
    return module


def _mask(shape, seed, full_row=False, rate=0.3):
    """A random boolean mask (True: masked); ``full_row``: one query masked whole."""
    m = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < rate
    m[..., 0] = False  # every query keeps a key, but for ...
    if full_row:
        m[..., 1, :] = True  # ... this one
    return m


# name -> (module factory, inputs factory: a tuple of tensors as the forward
# takes them, the same tensor object where the original is called with one)
def _self(b, n, d):
    def make(g):
        x = torch.randn(b, n, d, generator=g)
        return (x, x, x)
    return make


def _cross(b, nq, nk, d, mask=None):
    def make(g):
        q, kv = torch.randn(b, nq, d, generator=g), torch.randn(b, nk, d, generator=g)
        return (q, kv, kv) + (() if mask is None else (mask,))
    return make


def _image(shape, channels_last=False):
    def make(g):
        x = torch.randn(shape, generator=g)
        return (x.to(memory_format=torch.channels_last) if channels_last else x,)
    return make


TOKEN_CASES = {
    "sdpa-self-2heads": (lambda: ref.ScaledDotProductAttention(16, 8, 6, 2), _self(2, 9, 16)),
    "sdpa-cross-masked": (lambda: ref.ScaledDotProductAttention(24, 8, 8, 3),
                          _cross(2, 5, 11, 24, _mask((2, 1, 5, 11), 3))),
    "simplified-4heads-mask2d": (lambda: ref.SimplifiedScaledDotProductAttention(32, 4),
                                 _cross(3, 10, 10, 32, _mask((10, 10), 4))),
    # values, keys, query; mask == 0 masks, one query fully masked (-1e20: averages)
    "mhsa-masked": (lambda: ref.MultiHeadSelfAttention(24, 3),
                    lambda g: _cross(2, 6, 9, 24)(g)[::-1] + (
                        (~_mask((2, 1, 6, 9), 5, full_row=True)).long(),)),
    "mhsa-self": (lambda: ref.MultiHeadSelfAttention(16, 2),
                  lambda g: _self(2, 7, 16)(g) + (None,)),
    "danet-seed": (lambda: ref.danet(16, 3, 5, 7, ref.DAModuleSeed), _image((2, 16, 5, 7))),
    "danet-external-channels-last": (lambda: ref.danet(8, 3, 6, 4), _image((2, 8, 6, 4), True)),
    # junfu1115/DANet, gamma away from its initial 0 (which hides the attention)
    "pam-official": (lambda: _gamma(ref.PAM_Module(16)), _image((2, 16, 5, 6))),
    "pam-official-channels-last": (lambda: _gamma(ref.PAM_Module(16)), _image((2, 16, 3, 7), True)),
    "cam-official": (lambda: _gamma(ref.CAM_Module(12)), _image((2, 12, 5, 6))),
}


def _gamma(module):
    with torch.no_grad():
        module.gamma.fill_(0.8)
    return module


def _token_made(case):
    torch.manual_seed(0)
    return _spread(TOKEN_CASES[case][0]()).eval()


def _token_inputs(case, dtype, seed=1):
    """The case's inputs in ``dtype`` (the same object where the case passes
    one tensor several times), float tensors requiring grad."""
    made = TOKEN_CASES[case][1](torch.Generator().manual_seed(seed))
    cast = {}
    for t in made:
        if t is not None and id(t) not in cast:
            c = t.to(dtype) if t.is_floating_point() else t
            cast[id(t)] = c.detach().requires_grad_(c.is_floating_point())
    return tuple(None if t is None else cast[id(t)] for t in made)


def _run(module, inputs, dy_seed=2):
    """(y, input gradients, {parameter name: grad}) of one forward and backward."""
    module.zero_grad(set_to_none=True)
    y = module(*inputs)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(dy_seed)).to(y.dtype))
    leaves = [t for t in dict.fromkeys(inputs) if t is not None and t.requires_grad]
    return y, [t.grad for t in leaves], {n: p.grad for n, p in module.named_parameters()}


def _token_converted(upstream):
    fused, report = attnkernels.convert(copy.deepcopy(upstream))
    attention = [m for m in fused.modules() if isinstance(m, fnn.DotProductAttention)]
    assert attention and not report.left_alone, str(report)
    return fused, attention


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", AF.PATHS)
@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_token_major_matches_float64_reference(case, path, dtype):
    """Output, every input's and parameter's gradient: the converted module
    on ``path`` against the float64 original, within twice the original's own
    error in ``dtype`` (dropout off: eval; dropout: test_dropout_*)."""
    if case == "mhsa-masked" and dtype == torch.float16:
        pytest.skip("the original's -1e20 fill overflows float16 (test_fully_masked_query_...)")
    upstream = _token_made(case)
    fused, attention = _token_converted(upstream)
    for m in attention:
        m.path = path
    outs = {}
    for name, module, dt in (("oracle", copy.deepcopy(upstream).double(), torch.float64),
                             ("eager", copy.deepcopy(upstream).to(dtype), dtype),
                             ("fused", fused.to(dtype), dtype)):
        outs[name] = _run(module, _token_inputs(case, dt))
    (y_o, dx_o, dw_o), (y_e, dx_e, dw_e), (y_f, dx_f, dw_f) = (
        outs["oracle"], outs["eager"], outs["fused"])
    assert_matches_oracle(y_f, y_e, y_o, "y")
    for i, (a, b, c) in enumerate(zip(dx_f, dx_e, dx_o)):
        assert_matches_oracle(a, b, c, f"dx{i}")
    terms = y_o[..., 0].numel() ** 0.5
    for name, g_o in dw_o.items():
        if g_o is None:  # MultiHeadSelfAttention's never-called Linears
            assert dw_f[name] is None, name
            continue
        assert_matches_oracle(dw_f[name], dw_e[name], g_o, name, terms=terms)


def test_fully_masked_query_as_the_original():
    """-inf fill (True masks): a query with every key masked is NaN in the
    original and on SDPA (whose boolean mask alone gives 0); the -1e20 fill
    (0 masks): it averages every value, on both paths; a half-precision -1e20
    fill fails as the original's masked_fill does."""
    g = torch.Generator().manual_seed(0)
    up = _spread(ref.ScaledDotProductAttention(8, 4, 4, 2)).eval()
    fused, _ = _token_converted(up)
    q, kv = torch.randn(2, 4, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    masked = _mask((2, 1, 4, 6), 1, full_row=True)
    y_o = up.double()(q.double(), kv.double(), kv.double(), masked)
    for path in AF.PATHS:
        fused.path = path
        y = fused(q, kv, kv, masked)
        assert y[:, 1].isnan().all() and not y[:, [0, 2, 3]].isnan().any(), path
        torch.testing.assert_close(y.double(), y_o, equal_nan=True, rtol=1e-4, atol=1e-5)
    v = torch.randn(1, 2, 5, 3, generator=g)
    qk = torch.randn(1, 2, 5, 3, generator=g)
    every = torch.ones(5, 5, dtype=torch.bool)
    y = AF.masked_attention(qk, qk, v, 0.5, every, fill=-1e20)
    torch.testing.assert_close(y, v.mean(-2, keepdim=True).expand_as(v))
    mhsa = _spread(ref.MultiHeadSelfAttention(8, 2)).half()
    fused, _ = _token_converted(mhsa)
    fused.path = "sdpa"
    x = torch.randn(1, 3, 8).half()
    mask = torch.ones(1, 1, 3, 3).long()
    mask[..., 0] = 0
    for m in (mhsa, fused):
        with pytest.raises(RuntimeError, match="overflow"):
            m(x, x, x, mask)


def test_attention_weights_take_the_original_product():
    """Multiplicative attention_weights have no SDPA argument: the call runs
    the original's forward (the same bits)."""
    g = torch.Generator().manual_seed(0)
    up = _spread(ref.ScaledDotProductAttention(8, 4, 4, 2)).eval()
    fused, _ = _token_converted(up)
    fused.path = "sdpa"
    q = torch.randn(2, 4, 8, generator=g)
    w = torch.rand(2, 2, 4, 4, generator=g)
    assert torch.equal(fused(q, q, q, None, w), up(q, q, q, None, w))


def test_dropout_explicit_path_draws_as_the_original():
    """Training with dropout on the explicit path: the original's operations,
    so the same seed gives the same bits."""
    up = _spread(ref.ScaledDotProductAttention(16, 8, 8, 2, dropout=0.3)).train()
    fused, _ = _token_converted(up)
    fused.path = "explicit"
    x = torch.randn(2, 6, 16)
    torch.manual_seed(5)
    y_o = up(x, x, x)
    torch.manual_seed(5)
    assert torch.equal(fused(x, x, x), y_o)


@pytest.mark.parametrize("path", ["sdpa", "blockwise"])
def test_dropout_is_unbiased(path):
    """Training with dropout on SDPA (the CUDA path) and blockwise (the
    CPU's): each draw differs from the dropout-free output, their mean
    converges to it (weights scaled by 1/(1-p), as nn.Dropout does)."""
    g = torch.Generator().manual_seed(0)
    up = _spread(ref.SimplifiedScaledDotProductAttention(8, 2, dropout=0.5))
    fused, _ = _token_converted(up)
    fused.path = path
    x = torch.randn(1, 6, 8, generator=g)
    with torch.no_grad():
        y0 = fused.eval()(x, x, x)
        fused.train()
        draws = torch.stack([fused(x, x, x) for _ in range(400)])
    assert (draws[0] - y0).abs().max() > 0.05
    err = (draws.mean(0) - y0).abs().max()
    sem = (draws.std(0) / 400 ** 0.5).max()
    assert err < 5 * sem, (err, sem)


def test_token_major_path_choice():
    """By device and mode: on the CPU, SDPA unless dropout acts (training with
    p > 0: blockwise); the module's ``path`` overrides."""
    up = _spread(ref.ScaledDotProductAttention(16, 8, 8, 2))
    fused, _ = _token_converted(up)
    x = torch.randn(1, 3, 16)
    assert fused.eval().resolved_path(x) == "sdpa"
    assert fused.train().resolved_path(x) == "blockwise"
    fused.dropout.p = 0.0
    assert fused.train().resolved_path(x) == "sdpa"
    fused.path = "explicit"
    assert fused.resolved_path(x) == "explicit"
    mhsa, _ = _token_converted(_spread(ref.MultiHeadSelfAttention(8, 2)))
    assert mhsa.train().resolved_path(x[..., :8]) == "sdpa"


def test_token_major_convert_and_revert():
    """convert swaps the classes by structure wherever they sit (DANet's two
    branches), keeps state_dict keys and parameter objects; revert gives the
    originals back."""
    up = _token_made("danet-seed")
    params = dict(up.named_parameters())
    fused, report = attnkernels.convert(up)
    assert sorted(c[0] for c in report.converted) == [
        "channel_attention_module.pa", "position_attention_module.pa"]
    assert type(fused.position_attention_module.pa) is fnn.ScaledDotProductAttention
    assert type(fused.channel_attention_module.pa) is fnn.SimplifiedScaledDotProductAttention
    assert all(p is params[n] for n, p in fused.named_parameters())
    back, _ = attnkernels.revert(fused)
    assert type(back.position_attention_module.pa) is ref.ScaledDotProductAttention


def test_token_major_compiled_matches_eager_and_float64():
    """torch.compile (fullgraph) of a converted DANet on SDPA: output and
    gradients against eager's and the float64 original's."""
    case = "danet-seed"
    upstream = _token_made(case)
    fused, attention = _token_converted(upstream)
    for m in attention:
        m.path = "sdpa"
    y_o, dx_o, dw_o = _run(copy.deepcopy(upstream).double(), _token_inputs(case, torch.float64))
    y_e, dx_e, dw_e = _run(copy.deepcopy(fused), _token_inputs(case, torch.float32))
    torch._dynamo.reset()
    y_c, dx_c, dw_c = _run(torch.compile(fused, fullgraph=True), _token_inputs(case, torch.float32))
    assert_matches_oracle(y_c, y_e, y_o, "y")
    assert_matches_oracle(dx_c[0], dx_e[0], dx_o[0], "dx")
    for name, g_o in dw_o.items():
        assert_matches_oracle(dw_c[name.replace("_orig_mod.", "")] if name in dw_c else
                              dw_c["_orig_mod." + name], dw_e[name], g_o, name, terms=10.0)


def test_token_major_inference_path_by_the_product_layout():
    """CPU inference: SDPA where the product's q has the head dimension
    innermost: always after ScaledDotProductAttention's projection (DANet's
    position branch hands it tokens-innermost pixels), the inputs' own layout
    for the unprojected classes."""
    pixels = torch.randn(2, 8, 12).transpose(1, 2)  # (b, tokens, d) with tokens innermost
    projected, _ = _token_converted(_spread(ref.ScaledDotProductAttention(8, 4, 4, 2)).eval())
    plain, _ = _token_converted(_spread(ref.SimplifiedScaledDotProductAttention(8, 2)).eval())
    with torch.no_grad():
        assert projected.resolved_path(pixels) == "sdpa"
        assert plain.resolved_path(pixels) == "explicit"
        assert plain.resolved_path(pixels.contiguous()) == "sdpa"


def test_blockwise_gradients_with_dropout():
    """The blockwise path's backward draws the forward's masks again: its
    gradients (several query blocks, dropout on, one seed per call) are the
    numerical ones of the same function (gradcheck, float64); a mask takes
    the original's product."""
    from attnkernels.attention.blockwise import BLOCK, blockwise_attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, BLOCK + 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 9, 6, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 9, 4, generator=g, dtype=torch.float64, requires_grad=True)

    def dropped(a, b, c):
        torch.manual_seed(3)
        return blockwise_attention(a, b, c, 0.4, dropout_p=0.3)
    assert torch.autograd.gradcheck(dropped, (q, k, v))
    seed = torch.tensor(11)
    for args in ((q, k, v, 0.4, 0.3, seed), (q.float(), k.float(), v.float(), 0.4, 0.0, seed)):
        torch.library.opcheck(torch.ops.attnkernels.blockwise_attention.default, args)
    kept = (dropped(q, k, v) != 0).float().mean()
    assert 0.05 < (dropped(q, k, v) - blockwise_attention(q, k, v, 0.4)).abs().max()
    assert kept > 0.9  # outputs are sums of kept weights: dropped weights thin them, not zero them
    up = _spread(ref.ScaledDotProductAttention(8, 4, 4, 2)).train()
    fused, _ = _token_converted(up)
    fused.path = "blockwise"
    x = torch.randn(1, 3, 8)
    masked = _mask((1, 1, 3, 3), 1)
    torch.manual_seed(5)
    y = up(x, x, x, masked)
    torch.manual_seed(5)
    assert torch.equal(fused(x, x, x, masked), y)


def test_danet_official_convert_probe_sees_past_gamma_zero():
    """A fresh PAM_Module / CAM_Module has gamma = 0 (output = x whatever the
    attention): convert's probe sets gamma in both copies, so a copy whose
    attention differs (here CAM's softmax of +E instead of max(E) - E) is
    still refused; the real one converts."""
    class SignFlippedCAM(ref.CAM_Module):
        def forward(self, x):
            b, c, h, w = x.shape
            q = x.view(b, c, -1)
            attention = self.softmax(torch.bmm(q, q.transpose(1, 2)))
            return self.gamma * torch.bmm(attention, q).view(b, c, h, w) + x

    _, report = attnkernels.convert(SignFlippedCAM(8))
    assert not report.converted and "differs" in report.left_alone[0][2], str(report)
    for up in (ref.CAM_Module(8), ref.PAM_Module(16)):
        fused, report = attnkernels.convert(up)
        assert isinstance(fused, fnn.DotProductAttention), str(report)
        assert float(fused.gamma) == 0.0  # the module's own parameter untouched


def test_danet_official_gamma_is_shared_and_reverted():
    """The module's own parameter (gamma, not in a submodule) is adopted as
    the same object, trained through the fused module, and handed back by revert."""
    up = _gamma(ref.PAM_Module(16))
    fused, _ = attnkernels.convert(up)
    assert fused.gamma is up.gamma and list(fused.state_dict()) == list(up.state_dict())
    fused.path = "sdpa"
    fused(torch.randn(1, 16, 3, 4)).sum().backward()
    assert up.gamma.grad is not None and up.gamma.grad.abs() > 0
    with torch.no_grad():
        fused.gamma.fill_(0.25)
    back, _ = attnkernels.revert(fused)
    assert type(back) is ref.PAM_Module and float(back.gamma) == 0.25


@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(2, 12, 5, 6), (1, 40, 9, 11), (3, 1, 2, 2)])
def test_cam_fused_matches_float64_reference(shape, dtype, fmt):
    """CAM_Module's default path (path None: the fused op): y, dx and
    gamma's gradient against the float64 original, within twice the
    original's own error in dtype (the original's view refuses a
    channels_last x: its eager run takes the NCHW copy)."""
    up = _gamma(ref.CAM_Module(shape[1]))
    fused, _ = attnkernels.convert(copy.deepcopy(up))
    assert fused.path is None
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    layout = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    runs = {}
    for name, module, dt, mf in (("oracle", copy.deepcopy(up).double(), torch.float64,
                                  torch.contiguous_format),
                                 ("eager", copy.deepcopy(up).to(dtype), dtype,
                                  torch.contiguous_format),
                                 ("fused", fused.to(dtype), dtype, layout)):
        runs[name] = run_module(module, x.to(dt).to(memory_format=mf), dy.to(dt))
    names = ("y", "dx")
    for i, name in enumerate(names):
        assert_matches_oracle(runs["fused"][i], runs["eager"][i], runs["oracle"][i], name)
    assert_matches_oracle(runs["fused"][2]["gamma"], runs["eager"][2]["gamma"],
                          runs["oracle"][2]["gamma"], "dgamma",
                          terms=(shape[0] * shape[1] * shape[2] * shape[3]) ** 0.5)


def test_cam_fused_keeps_x_and_the_channel_attention_alone():
    """Saved for backward: x (the caller's) and the (B, C, C) attention; the
    original keeps its (B, C, H*W) product besides."""
    up = _gamma(ref.CAM_Module(16))
    fused, _ = attnkernels.convert(copy.deepcopy(up))
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    saved = {}
    for name, m in (("original", up), ("fused", fused)):
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t,
                                                      lambda t: t):
            m(x)
        saved[name] = kept
    big = [t for t in saved["fused"] if t.numel() >= x.numel()]
    assert [t.data_ptr() for t in big] == [x.data_ptr()]
    assert sorted(tuple(t.shape) for t in saved["fused"] if t.numel() < x.numel()) == [
        (1,), (2, 16, 16)]
    assert any(t.numel() >= x.numel() and t.data_ptr() != x.data_ptr()
               for t in saved["original"])  # gamma's operand, A X


def test_cam_fused_gradcheck_and_compile():
    up = _gamma(ref.CAM_Module(5)).double()
    fused, _ = attnkernels.convert(copy.deepcopy(up))
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, g: AF_channel.channel_attention(x, g),
                                    (x, fused.gamma.detach().clone().requires_grad_()))
    compiled = torch.compile(fused, fullgraph=True)
    dy = torch.randn_like(x)
    want, got = run_module(fused, x.detach(), dy), run_module(fused, x.detach(), dy, compiled)
    for a, b in zip(want[:2], got[:2]):
        torch.testing.assert_close(b, a)
    torch.testing.assert_close(got[2]["gamma"], want[2]["gamma"])


def test_cam_paths_are_checked():
    fused, _ = attnkernels.convert(_gamma(ref.CAM_Module(8)))
    fused.path = "fused"
    with pytest.raises(ValueError, match="path must be one of"):
        fused.path = "nope"
    pam, _ = attnkernels.convert(_gamma(ref.PAM_Module(16)))
    with pytest.raises(ValueError, match="path must be one of"):
        pam.path = "fused"  # CAM's alone
