"""CoT attention (a routed family: library convolutions, the attention
embedding's averaged last conv, one addcmul): the converted module against
the float64 original, forward, every gradient and the BatchNorm statistics,
eval and train, each dtype and layout; convert, revert, hooks, compile."""
import pytest
import torch

import attnkernels
from attnkernels.cot import functional as CF
from attnkernels.cot import modules as fnn
from attnkernels.cot import reference as ref
from utils import (FORMATS, MODULE_DTYPES, assert_compiled_matches_eager_and_float64,
                   assert_converted_matches_float64, converted_as_itself, unsettle_batch_norms)

WHY_NUDGED = ("CoT is a small network (grouped conv, BatchNorms, ReLUs, a softmax over the "
              "map): the original's own error depends on its rounding path")

# (dim, kernel_size, input shape): dims divisible by 4 (the grouped conv), odd maps
CASES = {"dim16-k3": (16, 3, (2, 16, 5, 7)), "dim32-k5": (32, 5, (2, 32, 6, 3)),
         "dim8-k1": (8, 1, (3, 8, 4, 4))}


def _made(case, seed=0):
    torch.manual_seed(seed)
    dim, k, _ = CASES[case]
    return unsettle_batch_norms(ref.CoTAttention(dim, k))


def _converted(upstream):
    return converted_as_itself(upstream, fnn.CoTAttention)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", MODULE_DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_float64_reference(case, dtype, train, fmt):
    """Output, input gradient, every parameter's gradient (the last conv's
    through the averaged weight) and BatchNorm statistics afterwards, within
    twice the original's own error in ``dtype``."""
    upstream = _made(case).train(train)
    assert_converted_matches_float64(upstream, _converted(upstream).to(dtype), CASES[case][2],
                                     dtype, fmt, WHY_NUDGED)


def test_averaged_conv_is_the_mean_of_the_groups():
    """The rewrite alone, float64: the mean of each channel's k*k outputs,
    against the original's reshape-and-mean order (channel c*k*k + j)."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64)
    w = torch.randn(4 * 9, 6, 1, 1, generator=g, dtype=torch.float64)
    b = torch.randn(4 * 9, generator=g, dtype=torch.float64)
    want = torch.nn.functional.conv2d(h, w, b).reshape(2, 4, 9, 3, 4).mean(2)
    torch.testing.assert_close(CF.averaged_conv1x1(h, w, b, 9), want, rtol=1e-12, atol=1e-12)


def test_convert_keeps_parameters_reverts_and_respects_hooks():
    """Same parameter objects and state_dict keys; revert gives the original
    back; a hook on the last conv (which the rewrite does not call) leaves
    the module alone with that reason, hooks elsewhere still run."""
    upstream = _made("dim16-k3").eval()
    params = dict(upstream.named_parameters())
    fused, report = attnkernels.convert(upstream)
    assert report.converted == [("", "CoTAttention", "CoTAttention")]
    assert all(p is params[n] for n, p in fused.named_parameters())
    assert list(fused.state_dict()) == list(_made("dim16-k3").state_dict())
    back, _ = attnkernels.revert(fused)
    assert type(back) is ref.CoTAttention
    hooked = _made("dim16-k3")
    hooked.attention_embed[-1].register_forward_hook(lambda *_: None)
    _, report = attnkernels.convert(hooked)
    assert not report.converted and "hooks" in report.left_alone[0][2]
    seen = []
    other = _made("dim16-k3")
    other.value_embed.register_forward_hook(lambda *_: seen.append(1))
    fused, _ = attnkernels.convert(other)
    fused(torch.randn(1, 16, 4, 4))
    assert isinstance(fused, fnn.CoTAttention) and seen == [1]  # the probe ran without it


def test_compiled_matches_eager_and_float64():
    """torch.compile (fullgraph) of the converted module in training mode."""
    upstream = _made("dim16-k3").train()
    assert_compiled_matches_eager_and_float64(upstream, _converted(upstream), CASES["dim16-k3"][2])
