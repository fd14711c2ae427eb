"""A converted network under torch.compile (default and max-autotune-no-cudagraphs)
and under CPU autocast (bfloat16): same numbers as the original network in eager."""
import copy

import pytest
import torch

from attnkernels._core.modules import FusedFamily, pin_backend

from bench.networks import exact_hardsigmoids
from utils import WHOLE_NETWORK, assert_matches_oracle, converted_zoo, nudged


def _train_run(model, x, forward=None):
    """Output, every parameter gradient and every buffer after one training-mode
    forward (by ``forward``, default ``model``) and backward (BatchNorm's batch
    statistics and running-stat update)."""
    model.train()
    model.zero_grad(set_to_none=True)
    y = (model if forward is None else forward)(x)
    y.square().sum().backward()
    state = {"y": y.detach()}
    state.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
    state.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return state


def _assert_runs_match(fused, eager, oracle, nudged_run):
    assert fused.keys() == oracle.keys()
    for k in oracle:
        if not oracle[k].is_floating_point():
            assert torch.equal(fused[k], eager[k]), k
            continue
        assert_matches_oracle(fused[k], eager[k], oracle[k], k, nudged_run[k], WHOLE_NETWORK)


# Under auto, torch.compile gives some families to inductor (their reference
# decomposition); the "cpu" run keeps our ops in every module of the network.
@pytest.mark.parametrize("mode,backend", [("default", "cpu"), ("max-autotune-no-cudagraphs", None)],
                         ids=["default-cpu", "max-autotune-auto"])
def test_compiled_converted_network_matches_eager(mode, backend):
    model, converted, x = converted_zoo()
    pin_backend(converted, backend)
    torch._dynamo.reset()
    compiled = torch.compile(converted, mode=mode, fullgraph=True)
    with torch.no_grad():
        y_f = compiled(x)
        y_e, y_n = model(x), model(nudged(x))
        y_o = copy.deepcopy(model).double()(x.double())
    assert_matches_oracle(y_f, y_e, y_o, "eval y", y_n, WHOLE_NETWORK)

    # Inductor reassociates the BatchNorm and conv backward sums: the compiled
    # original network, not the eager one, sets the error budget (its error on
    # the conv weight gradients here is ~1e-3, the eager network's ~4e-7).
    original = copy.deepcopy(model)
    compiled_original = _train_run(original, x, torch.compile(original, mode=mode, fullgraph=True))
    oracle = exact_hardsigmoids(copy.deepcopy(model).double())
    _assert_runs_match(_train_run(converted, x, compiled), compiled_original,
                       _train_run(oracle, x.double()), _train_run(copy.deepcopy(model), x))


def test_autocast_bfloat16_on_cpu():
    """Under autocast the convs hand the attention modules bfloat16 activations
    while their weights stay float32: the fused kernels take both, accumulate in
    float32, and land as close to the float64 network as eager autocast does."""
    model, converted, x = converted_zoo()
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
             for m in converted.modules() if isinstance(m, FusedFamily)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f, e = _train_run(converted, x), _train_run(copy.deepcopy(model), x)
        n = _train_run(copy.deepcopy(model), nudged(x))
    for h in hooks:
        h.remove()
    assert seen and all(s == (torch.bfloat16, torch.bfloat16) for s in seen)
    assert f["y"].dtype == torch.bfloat16
    assert all(f[k].dtype == torch.float32 for k in f if k.startswith("grad"))
    oracle = _train_run(exact_hardsigmoids(copy.deepcopy(model).double()), x.double())
    # Gradients land in float32 parameters: compare them at the precision they
    # were computed in (bfloat16 activations).
    for k in oracle:
        if not oracle[k].is_floating_point():
            assert torch.equal(f[k], e[k]), k
            continue
        assert_matches_oracle(f[k].bfloat16(), e[k].bfloat16(), oracle[k], k, n[k].bfloat16(),
                              WHOLE_NETWORK)
