"""Real timm and torchvision networks (random weights): attnkernels.convert
converts every attention module, and the converted network gives the same
eval outputs (float32, against the float64 original), the same training step
(parameters and BatchNorm buffers after one SGD step, float64) and the same
state_dict as the original."""
import copy

import pytest
import torch
import torch.nn.functional as F

import attnkernels
from attnkernels._core.modules import FusedFamily

from bench.networks import NETWORKS, attention_paths, exact_hardsigmoids, make_attention_matter
from utils import WHOLE_NETWORK, assert_matches_oracle, nudged

SHAPE = (2, 3, 64, 64)


def _network(name):
    torch.manual_seed(0)
    x = torch.randn(SHAPE)
    return make_attention_matter(NETWORKS[name](), x), x


def _converted(model):
    """A converted deep copy, after checking the report: every attention module
    converted, nothing left alone."""
    paths = attention_paths(model)
    converted, report = attnkernels.convert(copy.deepcopy(model))
    assert {p for p, _, _ in report.converted} == paths, str(report)
    assert not report.left_alone, str(report)
    fused_paths = {n for n, m in converted.named_modules() if isinstance(m, FusedFamily)}
    assert fused_paths == paths and not attention_paths(converted)
    return converted


@pytest.mark.parametrize("name", list(NETWORKS))
def test_converted_network_eval_outputs(name):
    model, x = _network(name)
    converted = _converted(model)
    with torch.no_grad():
        y_f = converted(x)
        y_e, y_n = model(x), model(nudged(x))
        y_o = copy.deepcopy(model).double()(x.double())
    assert_matches_oracle(y_f, y_e, y_o, name, y_n, WHOLE_NETWORK)


def _training_step(model, x, target):
    """One SGD step (momentum, weight decay) in training mode; the state afterwards."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    opt.zero_grad()
    F.cross_entropy(model(x), target).backward()
    opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_converted_network_training_step(name):
    """In float64, so that the comparison is tight: in float32, a randomly
    initialised network's gradients are ill-conditioned (eager float32 is
    about 1% off the float64 gradients in some tensors, and one ulp moved on the
    input moves them as much), which would hide any error of ours."""
    model, x = _network(name)
    converted = _converted(model).double()
    model, x = exact_hardsigmoids(model.double()), x.double()
    target = torch.tensor([1, 7])
    s_f = _training_step(converted, x, target)
    s_e = _training_step(copy.deepcopy(model), x, target)
    s_n = _training_step(copy.deepcopy(model), nudged(x), target)
    assert s_f.keys() == s_e.keys()
    changed = 0
    for k, v in s_f.items():
        if not v.is_floating_point():  # num_batches_tracked
            assert torch.equal(v, s_e[k]), k
            continue
        assert_matches_oracle(v, s_e[k], s_e[k], k, s_n[k], WHOLE_NETWORK)
        changed += not torch.equal(v, model.state_dict()[k])
    assert changed > 0.9 * sum(v.is_floating_point() for v in s_f.values())


@pytest.mark.parametrize("name", list(NETWORKS))
def test_state_dicts_move_both_ways(name):
    model, _ = _network(name)
    converted = _converted(model)
    original_state = model.state_dict()
    assert list(converted.state_dict()) == list(original_state)
    # Another network of each kind, with different weights, takes the other's state.
    fresh_original, fresh_converted = NETWORKS[name](), _converted(NETWORKS[name]())
    fresh_converted.load_state_dict(original_state, strict=True)
    fresh_original.load_state_dict(fresh_converted.state_dict(), strict=True)
    for k, v in original_state.items():
        assert torch.equal(fresh_converted.state_dict()[k], v), k
        assert torch.equal(fresh_original.state_dict()[k], v), k
