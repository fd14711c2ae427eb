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
from utils import (FORMATS, MODULE_DTYPES, assert_compiled_matches_eager_and_float64,
                   assert_converted_matches_float64, unsettle_batch_norms)

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
    assert_converted_matches_float64(upstream, _converted(upstream).to(dtype), CASES[case][2],
                                     dtype, fmt, WHY_NUDGED)


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
    assert_compiled_matches_eager_and_float64(upstream, _converted(upstream), CASES["c16-r4"][2])
