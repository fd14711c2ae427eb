"""GAM (a routed family: the channel MLP as 1x1 convs in the input's
layout, the last BatchNorm folded in eval): the converted module against the
float64 original, forward, every gradient and the BatchNorm statistics, eval
and train, each dtype and layout; convert, revert, hooks, compile."""
import copy

import pytest
import torch

import attnkernels
from attnkernels.gam import modules as fnn
from attnkernels.gam import reference as ref
from utils import (FORMATS, MODULE_DTYPES, assert_matches_oracle, parameter_terms,
                   run_module, unsettle_batch_norms)

# (in_channels, rate, input shape): odd maps, a rate that rounds the hidden width
CASES = {"c16-r4": (16, 4, (2, 16, 5, 7)), "c24-r5": (24, 5, (2, 24, 6, 3))}
WHY_NUDGED = ("GAM's spatial branch is a small network (7x7 convs, BatchNorms, a ReLU): the "
              "original's own error depends on its rounding path")


def _made(case, seed=0):
    torch.manual_seed(seed)
    c, rate, _ = CASES[case]
    return unsettle_batch_norms(ref.GAM_Attention(c, c, rate))


def _converted(upstream):
    fused, report = attnkernels.convert(copy.deepcopy(upstream))
    assert isinstance(fused, fnn.GAM_Attention), str(report)
    return fused


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", MODULE_DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_float64_reference(case, dtype, train, fmt):
    """Output, input gradient, every parameter's gradient (the Linears'
    through the 1x1 convs, the last conv's and BatchNorm's through the fold
    in eval) and BatchNorm statistics afterwards, against the float64
    original within twice its own error in ``dtype``."""
    upstream = _made(case).train(train)
    fused = _converted(upstream).to(dtype)
    eager = copy.deepcopy(upstream).to(dtype)
    oracle = copy.deepcopy(upstream).double()
    shape = CASES[case][2]
    g = torch.Generator().manual_seed(1)
    x, dy = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    x, dy = (t.to(memory_format=FORMATS[fmt]) for t in (x, dy))
    y_o, dx_o, dw_o = run_module(oracle, x.double(), dy.double())
    y_e, dx_e, dw_e = run_module(eager, x.to(dtype), dy.to(dtype))
    y_f, dx_f, dw_f = run_module(fused, x.to(dtype), dy.to(dtype))
    # the original in the other layout: its own error moves with the rounding path
    # (GAM c24-r5 bf16 train, a conv weight's gradient: 0.59 in NCHW, 3.08 in channels_last)
    other = FORMATS["nchw" if fmt == "channels_last" else "channels_last"]
    y_n, dx_n, dw_n = run_module(copy.deepcopy(upstream).to(dtype),
                                 x.to(dtype).to(memory_format=other),
                                 dy.to(dtype).to(memory_format=other))
    assert_matches_oracle(y_f, y_e, y_o, "y", y_n, WHY_NUDGED)
    assert_matches_oracle(dx_f, dx_e, dx_o, "dx", dx_n, WHY_NUDGED)
    for name, g_o in dw_o.items():
        assert_matches_oracle(dw_f[name], dw_e[name], g_o, name, dw_n[name], WHY_NUDGED,
                              terms=parameter_terms(shape))
    for (name, b_f), b_o, b_e in zip(fused.named_buffers(), oracle.buffers(), eager.buffers()):
        if b_f.is_floating_point():
            assert_matches_oracle(b_f, b_e, b_o, name)
        else:
            assert torch.equal(b_f, b_e), name
    assert y_f.is_contiguous(memory_format=FORMATS[fmt])


def test_convert_keeps_parameters_reverts_and_respects_hooks():
    """Same parameter objects; revert gives the original back; a hook on a
    Linear (used by its weights, not called) leaves the module alone."""
    upstream = _made("c16-r4").eval()
    params = dict(upstream.named_parameters())
    fused, report = attnkernels.convert(upstream)
    assert report.converted == [("", "GAM_Attention", "GAM_Attention")]
    assert all(p is params[n] for n, p in fused.named_parameters())
    back, _ = attnkernels.revert(fused)
    assert type(back) is ref.GAM_Attention
    hooked = _made("c16-r4")
    hooked.channel_attention[0].register_forward_hook(lambda *_: None)
    _, report = attnkernels.convert(hooked)
    assert not report.converted and "channel_attention.0 has hooks" in report.left_alone[0][2]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_compiled_matches_eager_and_float64(train):
    """torch.compile (fullgraph) of the converted module, both BatchNorm modes."""
    upstream = _made("c16-r4").train(train)
    shape = CASES["c16-r4"][2]
    x, dy = torch.randn(shape), torch.randn(shape)
    y_o, dx_o, dw_o = run_module(copy.deepcopy(upstream).double(), x.double(), dy.double())
    fused = _converted(upstream)
    eager = copy.deepcopy(fused)
    torch._dynamo.reset()
    y_c, dx_c, dw_c = run_module(fused, x, dy, torch.compile(fused, fullgraph=True))
    y_e, dx_e, dw_e = run_module(eager, x, dy)
    assert_matches_oracle(y_c, y_e, y_o, "y")
    assert_matches_oracle(dx_c, dx_e, dx_o, "dx")
    for name, g_o in dw_o.items():
        assert_matches_oracle(dw_c[name], dw_e[name], g_o, name, terms=parameter_terms(shape))
