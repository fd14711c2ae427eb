"""Coordinate Attention: every flavour x dtype x memory format x awkward shape x
backend, forward, all gradients and BatchNorm's running statistics against the
float64 reference."""
import pytest
import torch
from torch import nn

import attnkernels
from attnkernels import functional as F
from attnkernels import nn as fnn
from attnkernels import reference as ref
from attnkernels.coord import functional as coord_functional

import utils
from utils import BACKENDS, FORMATS, HAS_CPU, MODULE_DTYPES as DTYPES
from utils import (assert_empty_like_upstream, assert_float_module_matches_twin,
                   assert_flavour_matches_reference, assert_same_runs, matrix_cases,
                   runs_per_thread_count)

SHAPES = [(2, 24, 7, 9), (1, 13, 1, 1), (3, 8, 5, 1), (2, 32, 1, 6), (2, 32, 16, 16)]

# name -> shape -> fused module (its reference twin is built from the same class's base)
FLAVOURS = {
    "official": lambda s: fnn.CoordAtt(s[1], s[1], reduction=4),
    "official_groups": lambda s: fnn.CoordAttGroups(s[1], s[1]),
    "seed": lambda s: fnn.CA_Block(s[1], s[2], s[3], reduction=4),
    "timm": lambda s: fnn.CoordAttn(s[1]),
    "timm_bias_relu_hard_skip": lambda s: fnn.CoordAttn(
        s[1], rd_ratio=0.25, bias=True, act_layer=nn.ReLU, gate_layer="hard_sigmoid",
        has_skip=True),
    "timm_no_norm_silu": lambda s: fnn.CoordAttn(s[1], norm_layer=None, act_layer=nn.SiLU),
}


# The shared matrices' flavours (tests/flavours.py: compile, determinism, fuzz,
# extremes, tiles, emulated CUDA): name -> C -> a fused module, any C >= 1.
SHARED_FLAVOURS = {
    "official": lambda C: fnn.CoordAtt(C, C, reduction=1),
    "timm": lambda C: fnn.CoordAttn(C, rd_ratio=0.5, rd_divisor=1),
}

# The shared tests' other entries (tests/flavours.py): the main flavour (a
# SHARED_FLAVOURS key: realistic sizes in test_tiles), shapes whose Triton
# launches cross every tile, the two-runs determinism module and its C, and
# the forward op with arguments (test_op_outputs; x is (2, 6, 3, 5), w(*shape)
# a parameter).
MAIN_FLAVOUR = "official"
TRITON_TILE_SHAPES = {"official": (1, 40, 35, 37)}
TWO_RUNS = (lambda: fnn.CoordAttn(40), 40)  # two CPU channel blocks


def forward_op_case(backend, x, w):
    from attnkernels.coord.functional import forward_op

    return forward_op(backend), (x, w(3, 6), None, w(6, 3), None, w(6, 3), None, w(3), w(3),
                                 None, None, [3, 0, 1, 0, 1], 1e-5)


reference_twin = utils.reference_twin


def has_batch_norm(m: nn.Module) -> bool:
    return isinstance(getattr(m, "bn1", None), nn.BatchNorm2d)


@pytest.mark.parametrize("backend,device,flavour,dtype,fmt,shape",
                         list(matrix_cases(FLAVOURS, DTYPES, FORMATS, SHAPES)))
def test_matches_reference(backend, device, flavour, dtype, fmt, shape):
    fused = FLAVOURS[flavour](shape).to(device)
    if has_batch_norm(fused) and shape[0] * (shape[2] + shape[3]) == 1:
        fused.eval()
    two_values = has_batch_norm(fused) and shape[0] * (shape[2] + shape[3]) == 2
    why = "training BatchNorm over two values per channel" if two_values else None
    assert_flavour_matches_reference(fused, backend, dtype, fmt, shape, device, why_nudged=why)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("flavour", ["official", "timm"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("momentum", [0.3, None])
def test_batch_norm_modes_and_running_statistics(backend, device, flavour, train, momentum):
    shape = (3, 16, 6, 5)
    fused = FLAVOURS[flavour](shape).to(device)
    fused.bn1.momentum = momentum
    fused.bn1.running_mean.uniform_(-1, 1)
    fused.bn1.running_var.uniform_(0.5, 2)
    fused.bn1.num_batches_tracked.fill_(3)
    fused.train(train)
    fused.backend = backend
    assert_float_module_matches_twin(fused, reference_twin(fused), shape, device)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("bn,skip,act", [(False, False, "relu"), (True, True, "hardswish"),
                                         (True, False, "silu")])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_gradcheck(backend, device, bn, skip, act, fmt):
    kw = dict(dtype=torch.float64, device=device, requires_grad=True)
    B, C, H, W = (2, 5, 2, 3) if (backend, device) == ("triton", "cpu") else (2, 6, 3, 4)
    x = torch.randn(B, C, H, W, **kw).detach().to(memory_format=FORMATS[fmt]).requires_grad_()
    R = 3
    args = [torch.randn(R, C, **kw), torch.randn(R, **kw), torch.randn(C, R, **kw),
            torch.randn(C, **kw), torch.randn(C, R, **kw), torch.randn(C, **kw)]
    bn_args = [torch.randn(R, **kw), torch.randn(R, **kw)] if bn else [None, None]

    def f(x, w1, b1, wh, bh, ww, bw, g, b):
        return F.coordinate_attention(x, w1, b1, wh, bh, ww, bw, act=act, bn=bn, bn_weight=g,
                                      bn_bias=b, training=True, skip=skip, backend=backend)

    assert utils.gradcheck(f, (x, *args, *bn_args), backend, device)


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 5])
def test_cpu_independent_of_thread_count(fmt, batch):
    m = fnn.CoordAttn(72)  # three channel blocks per sample in channels_last
    m.backend = "cpu"
    x = torch.randn(batch, 72, 9, 7).to(memory_format=FORMATS[fmt])
    dy = torch.randn_like(x)
    assert_same_runs(runs_per_thread_count(m, x, dy))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_zero_batch(backend, device):
    m = fnn.CoordAttn(8, norm_layer=None).to(device)
    m.backend = backend
    assert_empty_like_upstream(m, (0, 8, 4, 4), device)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_opcheck_passes(fmt):
    x = torch.randn(2, 6, 3, 5).to(memory_format=FORMATS[fmt])
    ops = torch.ops.attnkernels
    ah, aw = torch.rand(2, 6, 3), torch.rand(2, 6, 5)
    torch.library.opcheck(ops.coord_pool.default, (x,))
    torch.library.opcheck(ops.coord_apply.default, (x, ah, aw, True))
    dy = torch.randn_like(x)
    torch.library.opcheck(ops.coord_backward_reduce.default, (dy, x, ah, aw))
    torch.library.opcheck(ops.coord_backward_apply.default,
                          (dy, ah, aw, torch.randn(2, 6, 3), torch.randn(2, 6, 5), False))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("bn_mode", [0, 1, 2])
def test_opcheck_composite(backend, device, bn_mode):
    kw = dict(device=device, requires_grad=True)
    x = torch.randn(2, 6, 3, 5, **kw)
    w1, wh, ww = torch.randn(3, 6, **kw), torch.randn(6, 3, **kw), torch.randn(6, 3, **kw)
    bn = [torch.randn(3, **kw), torch.randn(3, **kw)] if bn_mode else [None, None]
    running = [torch.zeros(3, device=device), torch.ones(3, device=device)] if bn_mode == 2 \
        else [None, None]
    torch.library.opcheck(coord_functional.forward_op(backend),
                          (x, w1, None, wh, None, ww, None, *bn, *running, [3, 0, bn_mode, 0, 1],
                           1e-5))
    # save=0 (no backward expected): its fake too, on inputs that need no gradient
    args = [t.detach() if isinstance(t, torch.Tensor) else t
            for t in (x, w1, None, wh, None, ww, None, *bn, *running)]
    torch.library.opcheck(coord_functional.forward_op(backend), (*args, [3, 0, bn_mode, 0, 0], 1e-5),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("bn_mode", [0, 1, 2])
def test_save_0_gives_the_same_forward_without_the_backward_tensors(backend, device, bn_mode):
    torch.manual_seed(0)
    kw = dict(device=device)
    tensors = [torch.randn(2, 6, 3, 5, **kw), torch.randn(3, 6, **kw), torch.randn(3, **kw),
               torch.randn(6, 3, **kw), None, torch.randn(6, 3, **kw), None,
               *([torch.rand(3, **kw) + 0.5, torch.randn(3, **kw)] if bn_mode else [None] * 2),
               *([torch.randn(3, **kw), torch.rand(3, **kw) + 0.5] if bn_mode == 2
                 else [None] * 2)]
    utils.assert_save_0_drops_only_backward_tensors(  # mh, mw, z, zn
        coord_functional.forward_op(backend), tensors, [3, 0, bn_mode, 0], 1e-5, range(3, 7))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("grad", [False, True])
def test_the_functional_saves_only_where_autograd_records(backend, device, grad, monkeypatch):
    m = fnn.CoordAtt(16, 16).to(device).eval()
    m.backend = backend
    x = torch.randn(2, 16, 5, 4, device=device)
    utils.assert_saves_only_where_autograd_records(coord_functional, m, x, grad, monkeypatch)


@pytest.mark.parametrize("device", utils.native_devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("hw", [(3, 5), (1, 4)])
@pytest.mark.parametrize("config,biases", [
    ([3, 0, 0, 0], True),    # hardswish, sigmoid, no BN
    ([1, 1, 1, 1], False),   # relu, hard_sigmoid, batch BN, skip
    ([2, 0, 2, 0], True),    # silu, sigmoid, running BN
])
@pytest.mark.parametrize("save", [0, 1])
def test_native_composite_is_bitwise_its_python_twin(device, dtype, hw, config, biases, save,
                                                     monkeypatch):
    torch.manual_seed(0)
    C, R = 6, 3
    kw = dict(device=device)
    x = torch.randn(2, C, *hw, **kw).to(dtype)
    w1, wh, ww = torch.randn(R, C, **kw), torch.randn(C, R, **kw), torch.randn(C, R, **kw)
    b1, bh, bw = ((torch.randn(R, **kw), torch.randn(C, **kw), torch.randn(C, **kw)) if biases
                  else (None, None, None))
    bn = [torch.rand(R, **kw) + 0.5, torch.randn(R, **kw)] if config[2] else [None, None]
    running = [torch.randn(R, **kw), torch.rand(R, **kw) + 0.5] if config[2] == 2 \
        else [None, None]
    utils.assert_native_composite_is_python_twin(
        attnkernels.coord, (x, w1, b1, wh, bh, ww, bw, *bn, *running, [*config, save], 1e-5), monkeypatch)


def test_seed_block_on_another_size_runs_reference_under_auto_and_raises_when_explicit():
    m = fnn.CA_Block(16, 1, 8, reduction=4)  # h = 1: upstream pools H whole, any H works
    utils.assert_reference_under_auto_and_raises_when_explicit(m, torch.randn(2, 16, 6, 8),
                                                              "not the fixed 1x8")


def _args():
    return {"x": torch.randn(2, 4, 3, 3), "w1": torch.randn(2, 4), "wh": torch.randn(4, 2),
            "ww": torch.randn(4, 2), "bn_weight": None}


@pytest.mark.parametrize("mutate,error,match", [
    (lambda a: {**a, "x": a["x"][0]}, ValueError, "x must be a 4-D"),
    (lambda a: {**a, "w1": torch.randn(2, 5)}, ValueError, "w1 must have shape"),
    (lambda a: {**a, "wh": torch.randn(3, 2)}, ValueError, "wh must have shape"),
    (lambda a: {**a, "ww": torch.randn(4, 3)}, ValueError, "ww must have shape"),
    (lambda a: {**a, "bn_weight": torch.randn(2)}, ValueError, "bn_weight given with bn=False"),
])
def test_bad_input_names_the_argument(mutate, error, match):
    a = mutate(_args())
    with pytest.raises(error, match=match):
        F.coordinate_attention(a["x"], a["w1"], None, a["wh"], None, a["ww"], None,
                               bn_weight=a["bn_weight"])


def test_flavour_factory_and_state_dict_keys():
    assert type(fnn.CoordinateAttention(64)) is fnn.CoordAttn
    assert set(fnn.CoordinateAttention(64, 64, flavour="official_groups").state_dict()) >= {
        "conv2.weight", "conv3.bias", "bn1.running_mean"}
    assert set(fnn.CA_Block(64, 7, 7).state_dict()) >= {"conv_1x1.weight", "bn.weight",
                                                        "F_h.weight", "F_w.weight"}
    assert fnn.CoordAtt(64, 64).conv1.out_channels == 8           # mip = max(8, 64 // 32)
    assert fnn.CoordAttn(256).conv1.out_channels == 8             # make_divisible(256/16*2/3, 8)
    with pytest.raises(ValueError, match="unknown CoordAtt flavour"):
        fnn.CoordinateAttention(64, flavour="nope")
    r, f = ref.CoordAttn(64), fnn.CoordAttn(64)
    f.load_state_dict(r.state_dict())
    r.load_state_dict(f.state_dict())
