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
                   assert_converted_matches_float64, converted_as_itself, unsettle_batch_norms)

# (upstream class and its arguments, input shape): odd maps, a rate that rounds
# the hidden width; each flavour (the YOLO copy's convs grouped and not)
CASES = {"seed-c16-r4": (lambda: ref.GAM_Attention(16, 16, 4), (2, 16, 5, 7)),
         "seed-c24-r5": (lambda: ref.GAM_Attention(24, 24, 5), (2, 24, 6, 3)),
         "gated-c24-r5": (lambda: ref.GAM_AttentionGated(24, rate=5), (2, 24, 6, 3)),
         "yolo-c16-r4": (lambda: ref.GAM_AttentionYOLO(16, 16), (2, 16, 5, 7)),
         "yolo-ungrouped-c24-r5": (lambda: ref.GAM_AttentionYOLO(24, 24, False, 5), (2, 24, 6, 3))}
WHY_NUDGED = ("GAM's spatial branch is a small network (7x7 convs, BatchNorms, a ReLU): the "
              "original's own error depends on its rounding path")


def _made(case, seed=0):
    torch.manual_seed(seed)
    return unsettle_batch_norms(CASES[case][0]())


def _converted(upstream):
    return converted_as_itself(upstream, fnn.GlobalAttention)


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
    assert_converted_matches_float64(upstream, _converted(upstream).to(dtype), CASES[case][1],
                                     dtype, fmt, WHY_NUDGED)


def test_convert_keeps_parameters_reverts_and_respects_hooks():
    """Same parameter objects; revert gives the original back; a hook on a
    Linear (used by its weights, not called) leaves the module alone."""
    upstream = _made("seed-c16-r4").eval()
    params = dict(upstream.named_parameters())
    fused, report = attnkernels.convert(upstream)
    assert report.converted == [("", "GAM_Attention", "GAM_Attention")]
    assert all(p is params[n] for n, p in fused.named_parameters())
    back, _ = attnkernels.revert(fused)
    assert type(back) is ref.GAM_Attention
    hooked = _made("seed-c16-r4")
    hooked.channel_attention[0].register_forward_hook(lambda *_: None)
    _, report = attnkernels.convert(hooked)
    assert not report.converted and "channel_attention.0 has hooks" in report.left_alone[0][2]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_compiled_matches_eager_and_float64(train):
    """torch.compile (fullgraph) of the converted module, both BatchNorm modes."""
    upstream = _made("yolo-c16-r4").train(train)
    assert_compiled_matches_eager_and_float64(upstream, _converted(upstream),
                                              CASES["yolo-c16-r4"][1])


def test_flavours_alike_in_structure_convert_to_their_own():
    """The probe tells the three flavours apart (same children, same shapes):
    each converts to its own drop-in, and a copy whose forward is none of
    them (the shuffle in 2 groups) is left alone, every flavour named."""
    for case in ("seed-c16-r4", "gated-c24-r5", "yolo-c16-r4"):
        upstream = _made(case)
        fused, report = attnkernels.convert(copy.deepcopy(upstream))
        assert report.converted == [("", type(upstream).__name__, type(upstream).__name__)]

    class ShuffledInTwo(ref.GAM_AttentionYOLO):
        SHUFFLE_GROUPS = 2

    _, report = attnkernels.convert(ShuffledInTwo(16, 16))
    assert not report.converted
    assert ("GAM_Attention / GAM_AttentionGated / GAM_AttentionYOLO structurally but its output "
            "differs") in report.left_alone[0][2]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_shuffled_product_keeps_the_layout_and_copies_nothing(fmt):
    """x * channel_shuffle(s, 4) through views: the original's values, x's
    layout, and no shuffled copy saved for backward (the product's saved
    tensors are x and s themselves)."""
    from attnkernels.gam.functional import shuffled_product

    x = torch.randn(2, 16, 5, 7).to(memory_format=FORMATS[fmt]).requires_grad_()
    s = torch.rand(2, 16, 5, 7).to(memory_format=FORMATS[fmt]).requires_grad_()
    y = shuffled_product(x, s, 4)
    assert torch.equal(y, x * ref.channel_shuffle(s, 4))
    assert y.is_contiguous(memory_format=FORMATS[fmt])
    mul = y.grad_fn.next_functions[0][0]  # under the final view
    saved = {t.untyped_storage().data_ptr() for t in (mul._saved_self, mul._saved_other)}
    assert saved == {x.untyped_storage().data_ptr(), s.untyped_storage().data_ptr()}
