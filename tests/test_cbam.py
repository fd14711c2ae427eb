"""CBAM: every flavour x dtype x memory format x awkward shape x backend, forward,
all gradients and BatchNorm's running statistics against the float64 reference."""
import copy

import pytest
import torch
from torch import nn

import attnkernels
from attnkernels import functional as F
from attnkernels import nn as fnn
from attnkernels import reference as ref
from attnkernels.cbam import functional as cbam_functional
from attnkernels.cbam import op as cbam_ops

import utils
from utils import BACKENDS, FORMATS, HAS_CPU, MODULE_DTYPES as DTYPES
from utils import (assert_empty_like_upstream, assert_float_module_matches_twin,
                   assert_flavour_matches_reference, assert_same_runs, matrix_cases, run_module,
                   runs_per_thread_count)

SHAPES = [(2, 24, 7, 9), (1, 13, 1, 1), (3, 8, 5, 1), (2, 32, 16, 16)]

# name -> C -> fused module (its reference twin is built from the same class's base)
FLAVOURS = {
    "seed": lambda C: fnn.CBAM(C, ratio=4),
    "seed_k3": lambda C: fnn.CBAM(C, 4, 3),
    "seed_block": lambda C: fnn.CBAMBlock(C, ratio=4),
    "seed_block_fc_k3": lambda C: fnn.CBAMBlockFc(C, 4, 3),
    "official": lambda C: fnn.OfficialCBAM(C, 4),
    "official_max": lambda C: fnn.OfficialCBAM(C, 4, pool_types=["max"]),
    "official_no_spatial": lambda C: fnn.OfficialCBAM(C, 4, no_spatial=True),
    "timm": lambda C: fnn.CbamModule(C),
    "timm_bias_silu_hard_k3": lambda C: fnn.CbamModule(
        C, rd_ratio=0.25, spatial_kernel_size=3, act_layer=nn.SiLU, gate_layer="hard_sigmoid",
        mlp_bias=True),
    "timm_light": lambda C: fnn.LightCbamModule(C),
    "ultralytics_k3": lambda C: fnn.UltralyticsCBAM(C, 3),
    "ultralytics_spatial": lambda C: fnn.UltralyticsSpatialAttention(7),
}


# The shared matrices' flavours (tests/flavours.py: compile, determinism, fuzz,
# extremes, tiles, emulated CUDA): name -> C -> a fused module, any C >= 1.
SHARED_FLAVOURS = {
    "timm": lambda C: fnn.CbamModule(C, rd_channels=max(1, C // 2)),
    "official": lambda C: fnn.OfficialCBAM(C, reduction_ratio=1),
    "seed": lambda C: fnn.CBAM(C, ratio=1, kernel_size=3),
    "light": lambda C: fnn.LightCbamModule(C, rd_channels=max(1, C // 2)),
    "ultralytics": lambda C: fnn.UltralyticsCBAM(C, 3),
    "ultralytics_spatial": lambda C: fnn.UltralyticsSpatialAttention(3),
    "seed_linear": lambda C: fnn.LinearCBAM(C, ratio=1, kernel_size=3),
    "external": lambda C: fnn.ExternalCBAMBlock(C, reduction=1, kernel_size=5),  # + x
}

# The shared tests' other entries (tests/flavours.py): the main flavour (a
# SHARED_FLAVOURS key: realistic sizes in test_tiles), shapes whose Triton
# launches cross every tile, the two-runs determinism module and its C, and
# the forward op with arguments (test_op_outputs; x is (2, 6, 3, 5), w(*shape)
# a parameter).
MAIN_FLAVOUR = "timm"
TRITON_TILE_SHAPES = {"timm": (1, 70, 11, 13)}
TWO_RUNS = (lambda: fnn.CbamModule(40), 40)  # two CPU channel blocks


def forward_op_case(backend, x, w):
    from attnkernels.cbam.functional import forward_op

    return forward_op(backend), (x, w(3, 6), None, w(6, 3), None, w(1, 2, 3, 3), None, w(1),
                                 w(1), None, None, [0, 1, 0, 0, 0, 1, 1], 1e-5)


reference_twin = utils.reference_twin


def has_batch_norm(m: nn.Module) -> bool:
    return any(isinstance(b, nn.BatchNorm2d) for b in m.modules())


@pytest.mark.parametrize("backend,device,flavour,dtype,fmt,shape",
                         list(matrix_cases(FLAVOURS, DTYPES, FORMATS, SHAPES)))
def test_matches_reference(backend, device, flavour, dtype, fmt, shape):
    fused = FLAVOURS[flavour](shape[1]).to(device)
    if has_batch_norm(fused) and shape[0] * shape[2] * shape[3] == 1:
        fused.eval()  # one value per channel: BatchNorm cannot train, upstream neither
    assert_flavour_matches_reference(fused, backend, dtype, fmt, shape, device)


def _randomise_batch_norm(m: nn.Module) -> None:
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.num_batches_tracked.fill_(3)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("flavour", ["official", "timm", "timm_light"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("momentum", [0.3, None])
def test_batch_norm_modes_and_running_statistics(backend, device, flavour, train, momentum):
    fused = FLAVOURS[flavour](16).to(device)
    for bn in fused.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = momentum
    _randomise_batch_norm(fused)
    fused.train(train)
    fused.backend = backend
    assert_float_module_matches_twin(fused, reference_twin(fused), (3, 16, 6, 5), device)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("first_max", [False, True])
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ties_route_the_max_gradient_like_pytorch(backend, device, first_max, fmt, dtype):
    """Equal maxima over H*W and over C: amax shares the gradient, max_pool2d and
    torch.max(dim) give it to the first; zeros make every channel tie. (H*W >= 16
    and C >= 4: the CPU's vector paths.)"""
    kw = dict(device=device, dtype=dtype)
    x = torch.randn(2, 6, 4, 5, **kw)
    x[0, :, 1, 2] = 0.0          # every channel ties at this pixel (and the spatial max is 0)
    x[0, :, 2, 3] = -1.0
    x[1, 2] = 3.0                # a whole channel ties over H*W
    x[1, 4, 0, :3] = 9.0
    x = x.to(memory_format=FORMATS[fmt])
    w1, w2 = torch.randn(3, 6, **kw), torch.randn(6, 3, **kw)
    cw = torch.randn(1, 2, 3, 3, **kw)
    utils.assert_functional_matches_reference(
        lambda xx, backend: F.convolutional_block_attention(xx, w1, None, w2, None, cw,
                                                            first_max=first_max, backend=backend),
        x, backend)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("flavour", ["timm", "official", "seed"])
def test_backward_uses_the_forward_gates_not_recomputed_ones(backend, device, flavour,
                                                             monkeypatch):
    """The backward finds the max positions by comparing x * ca with the pooled
    maxima, so it must read ca as the forward made it. torch.compile traces the
    backward and puts its own sigmoid there, an ulp off ATen's (the GPU's fast
    exp, first seen on an H200): here every gate computed during the backward
    is moved by one ulp, and the gradients must not move beyond rounding."""
    m = FLAVOURS[flavour](40).to(device)
    m.backend = backend
    x = torch.randn(2, 40, 6, 7, device=device)
    dy = torch.randn_like(x)
    _, dx, dw = run_module(m, x, dy)
    xx = x.clone().requires_grad_()
    m.zero_grad(set_to_none=True)
    y2 = m(xx)
    true_gate = cbam_ops.gate
    monkeypatch.setattr(cbam_ops, "gate",
                        lambda z, name: torch.nextafter(true_gate(z, name), z.new_tensor(2.0)))
    y2.backward(dy)
    torch.testing.assert_close(xx.grad, dx, rtol=1e-4, atol=1e-5)
    for name, p in m.named_parameters():
        torch.testing.assert_close(p.grad, dw[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("spatial_input,channel_pool,first_max,bn", [
    ("mean_max", "avg_max", False, False),
    ("max_mean", "avg_max", True, True),
    ("mix", "mix", False, True),
    ("none", "max", True, False),
])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_gradcheck(backend, device, spatial_input, channel_pool, first_max, bn, fmt):
    kw = dict(dtype=torch.float64, device=device, requires_grad=True)
    B, C, H, W = (2, 5, 2, 3) if (backend, device) == ("triton", "cpu") else (2, 6, 3, 4)
    x = torch.randn(B, C, H, W, **kw).detach().to(memory_format=FORMATS[fmt]).requires_grad_()
    w1, b1 = torch.randn(3, C, **kw), torch.randn(3, **kw)
    w2, b2 = torch.randn(C, 3, **kw), torch.randn(C, **kw)
    cw = torch.randn(1, 1 if spatial_input == "mix" else 2, 3, 3, **kw)
    cb = torch.randn(1, **kw)
    bw, bb = (torch.randn(1, **kw), torch.randn(1, **kw)) if bn else (None, None)

    def f(x, w1, b1, w2, b2, cw, cb, bw, bb):
        return F.convolutional_block_attention(
            x, w1, b1, w2, b2, cw, cb, act="silu", channel_pool=channel_pool,
            spatial_input=spatial_input, bn=bn, bn_weight=bw, bn_bias=bb, training=True,
            first_max=first_max, backend=backend)

    assert utils.gradcheck(f, (x, w1, b1, w2, b2, cw, cb, bw, bb), backend, device)


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 5])
def test_cpu_independent_of_thread_count(fmt, batch):
    m = fnn.CBAM(72, ratio=8)  # three channel blocks per sample
    m.backend = "cpu"
    x = torch.randn(batch, 72, 9, 7).to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    assert_same_runs(runs_per_thread_count(m, x, dy))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("first_max", [False, True])
def test_nan_propagates_through_the_max_pools(backend, device, first_max):
    x = torch.randn(2, 8, 5, 6, device=device, dtype=torch.float64)
    x[1, 3, 2, 4] = float("nan")
    m = fnn.CBAM(8, ratio=4).to(device).double() if first_max else \
        fnn.CbamModule(8).to(device).double().eval()
    m.backend = backend
    y = m(x.clone().requires_grad_())
    y_ref = reference_twin(m)(x)
    assert torch.equal(y.isnan(), y_ref.isnan())
    assert y[1].isnan().all() and not y[0].isnan().any()


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [40, 39])
def test_spatial_pool_max_is_amax_with_nan_and_inf(fmt, dtype, channels):
    """The float pass takes its max without NaN checks and goes over a channel
    block again when a NaN reached its sums: the max map is still torch.amax's,
    for a NaN inside a vector of four, in the tail, and in the second block
    (NCHW takes channels four at a time: 39 leaves three alone)."""
    x = torch.randn(3, channels, 5, 7, dtype=dtype)  # channel blocks 0-31 and 32-; HW = 35
    x[0, 3, 1, 1] = float("nan")  # pixel 8: inside the vectors
    x[1, 35, 4, 6] = float("nan")  # pixel 34: the scalar tail, second block
    x[1, 2, 0, 2] = float("nan")
    x[2, 10, 2, 2] = float("inf")
    x[2, :, 3, 3] = float("-inf")
    x = x.to(memory_format=FORMATS[fmt])
    ca = torch.rand(3, channels, dtype=dtype)
    _, smax = torch.ops.attnkernels.cbam_spatial_pool(x, ca)
    expect = (x * ca[:, :, None, None]).amax(1)
    assert smax.isnan().sum() == 3
    torch.testing.assert_close(smax, expect, rtol=0, atol=0, equal_nan=True)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channel_pool_max_is_amax_with_nan_and_inf(fmt, dtype):
    """The float NCHW pass takes its max without NaN checks and runs a
    channel's max again when a NaN reached its sums: still torch.amax's, for a
    NaN in the vectors and in the tail, and for +inf and -inf in one channel
    (a NaN sum with no NaN element)."""
    x = torch.randn(2, 5, 5, 7, dtype=dtype)  # HW = 35: two blocks of 16 and a tail of 3
    x[0, 1, 1, 1] = float("nan")  # pixel 8
    x[1, 2, 4, 6] = float("nan")  # pixel 34: the tail
    x[1, 3, 0, 0] = float("inf")
    x[1, 3, 2, 2] = float("-inf")
    x = x.to(memory_format=FORMATS[fmt])
    mean, cmax = torch.ops.attnkernels.cbam_channel_pool(x)
    expect = x.amax((2, 3))
    assert cmax.isnan().sum() == 2 and cmax[1, 3] == float("inf")
    torch.testing.assert_close(cmax, expect, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(mean, x.mean((2, 3)), equal_nan=True)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 8, 4, 4)])
def test_zero_batch(backend, device, shape):
    m = fnn.CBAM(8, ratio=4).to(device)
    m.backend = backend
    assert_empty_like_upstream(m, shape, device)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("first_max", [False, True])
def test_opcheck_passes(fmt, first_max):
    x = torch.randn(2, 6, 3, 5).to(memory_format=FORMATS[fmt])
    ops = torch.ops.attnkernels
    ca = torch.rand(2, 6)
    cmean, cmax = ops.cbam_channel_pool(x)
    torch.library.opcheck(ops.cbam_channel_pool.default, (x,))
    torch.library.opcheck(ops.cbam_spatial_pool.default, (x, ca))
    smean, smax = ops.cbam_spatial_pool(x, ca)
    sa = torch.rand(2, 3, 5)
    torch.library.opcheck(ops.cbam_apply.default, (x, ca, sa))
    dy = torch.randn_like(x)
    torch.library.opcheck(ops.cbam_backward_reduce.default, (dy, x, ca, sa, cmax, smax, first_max))
    _, _, ctie, stie = ops.cbam_backward_reduce(dy, x, ca, sa, cmax, smax, first_max)
    g = torch.randn(2, 3, 5)
    torch.library.opcheck(ops.cbam_spatial_pool_backward.default,
                          (x, ca, smax, stie, g, g, first_max))
    cg = torch.randn(2, 6)
    torch.library.opcheck(ops.cbam_backward_apply.default,
                          (dy, x, ca, sa, cmax, ctie, cg, cg, smax, stie, g, g, first_max))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("bn_mode", [0, 1, 2])
@pytest.mark.parametrize("hw", [(3, 5), (5, 3)])  # the gate conv works on either side as columns
def test_opcheck_composite(backend, device, bn_mode, hw):
    kw = dict(device=device, requires_grad=True)
    x = torch.randn(2, 6, *hw, **kw)
    w1, w2 = torch.randn(3, 6, **kw), torch.randn(6, 3, **kw)
    cw = torch.randn(1, 2, 3, 3, **kw)
    bn = [torch.randn(1, **kw), torch.randn(1, **kw)] if bn_mode else [None, None]
    running = [torch.zeros(1, device=device), torch.ones(1, device=device)] if bn_mode == 2 \
        else [None, None]
    config = [0, 1, 0, 0, 0, bn_mode, 1]
    torch.library.opcheck(cbam_functional.forward_op(backend),
                          (x, w1, None, w2, None, cw, None, *bn, *running, config, 1e-5))


@pytest.mark.parametrize("device", utils.native_devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("hw", [(3, 5), (5, 3)])
@pytest.mark.parametrize("config,two_layers,biases", [
    ([0, 1, 0, 0, 0, 0, 1], True, True),    # avg_max, relu, sigmoid, [mean, max], no BN
    ([1, 2, 1, 1, 1, 1, 0], True, False),   # mix, silu, hard_sigmoid, [max, mean], batch BN
    ([2, 0, 0, 2, 0, 2, 1], False, True),   # avg, one layer, [mix], running BN
    ([3, 3, 0, 3, 0, 0, 0], True, True),    # max, hardswish, no spatial gate
])
def test_native_composite_is_bitwise_its_python_twin(device, dtype, hw, config, two_layers,
                                                     biases, monkeypatch):
    torch.manual_seed(0)
    C, R = 6, 3
    kw = dict(device=device)
    x = torch.randn(2, C, *hw, **kw).to(dtype)
    w1 = torch.randn(R if two_layers else C, C, **kw)
    b1 = torch.randn(w1.shape[0], **kw) if biases else None
    w2 = torch.randn(C, R, **kw) if two_layers else None
    b2 = torch.randn(C, **kw) if biases and two_layers else None
    cw = torch.randn(1, 1 if config[3] == 2 else 2, 3, 3, **kw)
    cb = torch.randn(1, **kw) if biases else None
    bn = [torch.rand(1, **kw) + 0.5, torch.randn(1, **kw)] if config[5] else [None, None]
    running = [torch.randn(1, **kw), torch.rand(1, **kw) + 0.5] if config[5] == 2 \
        else [None, None]
    utils.assert_native_composite_is_python_twin(
        attnkernels.cbam, (x, w1, b1, w2, b2, cw, cb, *bn, *running, config, 1e-5), monkeypatch)


def test_pool_types_lp_lse_run_reference_under_auto_and_raise_when_explicit():
    utils.assert_reference_under_auto_and_raises_when_explicit(
        fnn.OfficialCBAM(16, 4, pool_types=["avg", "lse"]), torch.randn(2, 16, 3, 3), "pool_types")


def test_reference_fallback_counts_the_batch_once():
    m = fnn.OfficialCBAM(16, 4, pool_types=["lp"])
    m(torch.randn(2, 16, 3, 3))
    assert m.SpatialGate.spatial.bn.num_batches_tracked.item() == 1
    f = fnn.CbamModule(16)
    f(torch.randn(2, 16, 3, 3))
    assert f.spatial.conv.bn.num_batches_tracked.item() == 1


def _args():
    return {"x": torch.randn(2, 4, 3, 3), "w1": torch.randn(2, 4), "w2": torch.randn(4, 2),
            "conv_weight": torch.randn(1, 2, 7, 7), "spatial_input": "mean_max"}


@pytest.mark.parametrize("mutate,error,match", [
    (lambda a: {**a, "x": a["x"][0]}, ValueError, "x must be a 4-D"),
    (lambda a: {**a, "x": a["x"].long()}, TypeError, "x must be a floating-point"),
    (lambda a: {**a, "w1": torch.randn(2, 5)}, ValueError, "w1 must have shape"),
    (lambda a: {**a, "w2": torch.randn(3, 2)}, ValueError, "w2 must have shape"),
    (lambda a: {**a, "conv_weight": torch.randn(1, 2, 4, 4)}, ValueError, "conv_weight must be a"),
    (lambda a: {**a, "conv_weight": torch.randn(1, 2, 3, 3), "spatial_input": "mix"}, ValueError,
     r"conv_weight must be a \(1, 1, k, k\)"),
    (lambda a: {**a, "spatial_input": "sideways"}, ValueError, "spatial_input must be one of"),
])
def test_bad_input_names_the_argument(mutate, error, match):
    a = mutate(_args())
    with pytest.raises(error, match=match):
        F.convolutional_block_attention(a["x"], a["w1"], None, a["w2"], None, a["conv_weight"],
                                        spatial_input=a["spatial_input"])


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_compiled_passes_check_their_arguments():
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(RuntimeError, match=r"ca must be a contiguous \(2, 4\)"):
        torch.ops.attnkernels.cbam_spatial_pool(x, torch.rand(2, 5))
    with pytest.raises(RuntimeError, match=r"sa must be a contiguous \(2, 3, 3\)"):
        torch.ops.attnkernels.cbam_apply(x, torch.rand(2, 4), torch.rand(2, 9))


def test_flavour_factory_and_state_dict_keys():
    assert type(fnn.ConvBlockAttention(64)) is fnn.CbamModule
    assert set(fnn.ConvBlockAttention(64, flavour="seed").state_dict()) == {
        "ca.fc1.weight", "ca.fc2.weight", "sa.conv1.weight"}
    assert set(fnn.CBAMBlock(64).state_dict()) == {
        "channelattention.fc.0.weight", "channelattention.fc.2.weight",
        "spatialattention.conv.weight"}
    assert set(fnn.UltralyticsCBAM(64).state_dict()) == {
        "channel_attention.fc.weight", "channel_attention.fc.bias", "spatial_attention.cv1.weight"}
    assert "SpatialGate.spatial.bn.running_var" in fnn.OfficialCBAM(64).state_dict()
    assert fnn.OfficialCBAM(64).SpatialGate.spatial.bn.momentum == 0.01
    assert "spatial.conv.bn.num_batches_tracked" in fnn.CbamModule(64).state_dict()
    with pytest.raises(ValueError, match="unknown CBAM flavour"):
        fnn.ConvBlockAttention(64, flavour="nope")
    r, f = ref.cbam.CbamModule(64), fnn.CbamModule(64)
    f.load_state_dict(r.state_dict())
    r.load_state_dict(f.state_dict())
    deep = copy.deepcopy(f)
    assert type(deep) is fnn.CbamModule
