"""Triplet Attention: every flavour x dtype x memory format x awkward shape x
backend, forward, all gradients and BatchNorm's running statistics against the
float64 reference."""
import copy

import pytest
import torch
from torch import nn

import attnkernels
from attnkernels import functional as F
from attnkernels import nn as fnn
from attnkernels import reference as ref
from attnkernels.triplet import functional as triplet_functional

import utils
from utils import BACKENDS, FORMATS, HAS_CPU, MODULE_DTYPES as DTYPES
from utils import (assert_empty_like_upstream, assert_float_module_matches_twin,
                   assert_flavour_matches_reference, assert_same_runs, matrix_cases, run_module,
                   runs_per_thread_count)

# (2, 40, 9, 17): two channel blocks on the CPU, and rows that are not a multiple of 4
SHAPES = [(2, 24, 7, 9), (1, 13, 1, 1), (3, 8, 5, 1), (2, 40, 9, 17)]

# name -> C -> fused module (its reference twin is built from the same class's base)
FLAVOURS = {
    "official": lambda C: fnn.TripletAttention(),
    "official_no_spatial": lambda C: fnn.TripletAttention(no_spatial=True),
    "official_k3": lambda C: fnn.TripletAttention(kernel_size=3),
    "legacy": lambda C: fnn.LegacyTripletAttention(C),
    "legacy_no_spatial_k3": lambda C: fnn.LegacyTripletAttention(C, no_spatial=True,
                                                                 kernel_size=3),
}


# The shared matrices' flavours (tests/flavours.py: compile, determinism, fuzz,
# extremes, tiles, emulated CUDA): name -> C -> a fused module, any C >= 1.
SHARED_FLAVOURS = {
    "official": lambda C: fnn.TripletAttention(),
    "no_spatial_k3": lambda C: fnn.TripletAttention(no_spatial=True, kernel_size=3),
    "legacy": lambda C: fnn.LegacyTripletAttention(C),
}

# The shared tests' other entries (tests/flavours.py): the main flavour (a
# SHARED_FLAVOURS key: realistic sizes in test_tiles), shapes whose Triton
# launches cross every tile, the two-runs determinism module and its C, and
# the forward op with arguments (test_op_outputs; x is (2, 6, 3, 5), w(*shape)
# a parameter).
MAIN_FLAVOUR = "official"
TRITON_TILE_SHAPES = {"official": (1, 70, 11, 13)}
TWO_RUNS = (lambda: fnn.TripletAttention(), 40)  # two CPU channel blocks


def forward_op_case(backend, x, w):
    from attnkernels.triplet.functional import forward_op

    return forward_op(backend), (x, w(3, 2, 3, 3), None, w(3), w(3), None, None, [1, 1, 1],
                                 1e-5)


reference_twin = utils.reference_twin


def batch_norms(m: nn.Module):
    return [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]


@pytest.mark.parametrize("backend,device,flavour,dtype,fmt,shape",
                         list(matrix_cases(FLAVOURS, DTYPES, FORMATS, SHAPES)))
def test_matches_reference(backend, device, flavour, dtype, fmt, shape):
    fused = FLAVOURS[flavour](shape[1]).to(device)
    if shape[0] * shape[2] * shape[3] == 1:
        fused.eval()  # one value in the hw branch: BatchNorm cannot train, upstream neither
    assert_flavour_matches_reference(fused, backend, dtype, fmt, shape, device)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("flavour", ["official", "legacy_no_spatial_k3"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("momentum", [0.3, None])
def test_batch_norm_modes_and_running_statistics(backend, device, flavour, train, momentum):
    fused = FLAVOURS[flavour](16).to(device)
    for bn in batch_norms(fused):
        bn.momentum = momentum
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.num_batches_tracked.fill_(3)
    fused.train(train)
    fused.backend = backend
    assert_float_module_matches_twin(fused, reference_twin(fused), (3, 16, 6, 5), device)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_each_branch_updates_its_running_statistics_with_its_momentum(backend, device):
    """Per-branch momenta (BatchNorms alike but for momentum) in training mode:
    each branch's running statistics move by its own momentum, as in the float64
    reference."""
    kw = dict(device=device, dtype=torch.float64)
    x = torch.randn(3, 8, 5, 6, **kw)
    ws = [torch.randn(1, 2, 3, 3, **kw) for _ in range(3)]
    momenta = [0.1, 0.5, 0.9]
    means_r = [torch.randn(1, **kw) for _ in range(3)]
    vars_r = [torch.rand(1, **kw) + 0.5 for _ in range(3)]
    means_f, vars_f = [m.float() for m in means_r], [v.float() for v in vars_r]
    y_r = ref.triplet.triplet_attention(x, ws, bn=True, running_means=means_r,
                                        running_vars=vars_r, training=True, momentum=momenta)
    y_f = F.triplet_attention(x.float(), [w.float() for w in ws], bn=True,
                              running_means=means_f, running_vars=vars_f, training=True,
                              momentum=momenta, backend=backend)
    torch.testing.assert_close(y_f.double(), y_r, rtol=1e-5, atol=1e-5)
    for fused, oracle in zip(means_f + vars_f, means_r + vars_r):
        torch.testing.assert_close(fused.double(), oracle, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ties_route_the_max_gradient_like_pytorch(backend, device, fmt, dtype):
    """Equal maxima over C, over H and over W: torch.max(dim) gives the gradient
    to the first. (W >= 4: the CPU's vector paths.)"""
    kw = dict(device=device, dtype=dtype)
    x = torch.randn(2, 6, 5, 9, **kw)
    x[0, :, 1, 2] = 4.0          # every channel ties at this pixel
    x[0, 3, :, 5] = 5.0          # a column ties over H
    x[1, 2, 3, :] = 6.0          # a row ties over W
    x[1, 4, 0, 1:8:3] = 7.0      # three equal maxima in a row, apart
    x = x.to(memory_format=FORMATS[fmt])
    weights = [torch.randn(1, 2, 3, 3, **kw) for _ in range(3)]
    utils.assert_functional_matches_reference(
        lambda xx, backend: F.triplet_attention(xx, weights, backend=backend), x, backend)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("no_spatial,bn,bias,k", [(False, "batch", False, 3),
                                                  (True, "running", True, 3),
                                                  (False, "none", True, 5)])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_gradcheck(backend, device, no_spatial, bn, bias, k, fmt):
    kw = dict(dtype=torch.float64, device=device, requires_grad=True)
    B, C, H, W = (2, 3, 2, 3) if (backend, device) == ("triton", "cpu") else (2, 5, 3, 4)
    x = torch.randn(B, C, H, W, **kw).detach().to(memory_format=FORMATS[fmt]).requires_grad_()
    G = 2 if no_spatial else 3
    ws = [torch.randn(1, 2, k, k, **kw) for _ in range(G)]
    bs = [torch.randn(1, **kw) for _ in range(G)] if bias else None
    bws = [torch.randn(1, **kw) for _ in range(G)] if bn != "none" else None
    bbs = [torch.randn(1, **kw) for _ in range(G)] if bn != "none" else None
    running = dict(running_means=[torch.randn(1, **kw).detach() for _ in range(G)],
                   running_vars=[torch.rand(1, **kw).detach() + 0.5 for _ in range(G)]) \
        if bn == "running" else {}

    def f(x, *params):
        ws_, rest = list(params[:G]), list(params[G:])
        bs_ = rest[:G] if bias else None
        rest = rest[G:] if bias else rest
        bws_, bbs_ = (rest[:G], rest[G:]) if bn != "none" else (None, None)
        return F.triplet_attention(x, ws_, bs_, bn=bn != "none", bn_weights=bws_,
                                   bn_biases=bbs_, training=bn == "batch", no_spatial=no_spatial,
                                   backend=backend, **running)

    params = ws + (bs or []) + (bws or []) + (bbs or [])
    assert utils.gradcheck(f, (x, *params), backend, device)


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
def test_gradcheck_on_thin_planes():
    """C x 3 and 4 x C maps: the gate convs run on attnkernels::gate_conv2d."""
    kw = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 64, 3, 4, **kw)
    ws = [torch.randn(1, 2, 3, 3, **kw) for _ in range(3)]
    bws, bbs = [torch.rand(1, **kw) + 0.5 for _ in range(3)], [torch.randn(1, **kw) for _ in range(3)]

    def f(x, *p):
        return F.triplet_attention(x, p[:3], bn=True, bn_weights=p[3:6], bn_biases=p[6:],
                                   training=True, backend="cpu")

    assert torch.autograd.gradcheck(f, (x, *ws, *bws, *bbs), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch", [1, 5])
def test_cpu_independent_of_thread_count(fmt, batch):
    m = fnn.TripletAttention()
    m.backend = "cpu"
    x = torch.randn(batch, 72, 9, 7).to(memory_format=FORMATS[fmt])  # three channel blocks
    dy = torch.randn_like(x)
    assert_same_runs(runs_per_thread_count(m, x, dy))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_nan_propagates_through_the_max_pools(backend, device, fmt):
    """In eval mode a NaN spreads through each branch's conv window only: the
    output's NaNs, and dx's, fall where the reference's do."""
    x = torch.randn(2, 8, 5, 6, device=device, dtype=torch.float64)
    x[1, 3, 2, 4] = float("nan")
    x = x.to(memory_format=FORMATS[fmt])
    m = fnn.TripletAttention(kernel_size=3).to(device).double().eval()
    m.backend = backend
    twin = reference_twin(m)
    dy = torch.randn_like(x)
    y, dx, _ = run_module(m, x, dy)
    y_ref, dx_ref, _ = run_module(twin, x, dy)
    assert torch.equal(y.isnan(), y_ref.isnan())
    assert y[1].isnan().any() and not y[1].isnan().all() and not y[0].isnan().any()
    assert torch.equal(dx.isnan(), dx_ref.isnan())


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pool_maxima_are_amax_with_nan_and_inf(fmt, dtype):
    """The float pass takes its maxima without NaN checks and goes over a
    channel block again when a NaN reached its row sums: each max is still
    torch.amax's, for a NaN in a vector of four, in the tail of a row, in a
    group of four channels and in a lone channel (C = 38: 32 + 4 + 2)."""
    x = torch.randn(2, 38, 5, 7, dtype=dtype)
    x[0, 3, 1, 1] = float("nan")  # vectors, a group of four
    x[1, 37, 4, 2] = float("nan")  # vectors, a lone channel
    x[1, 20, 0, 5] = float("nan")  # the row's tail
    x[0, 10, 2, 2] = float("inf")
    x[0, 12] = float("-inf")
    x = x.to(memory_format=FORMATS[fmt])
    _, cmax, _, hmax, _, wmax = torch.ops.attnkernels.triplet_pool(x)
    for got, dim in ((cmax, 1), (hmax, 2), (wmax, 3)):
        expect = x.amax(dim)
        assert got.isnan().sum() == 3
        torch.testing.assert_close(got, expect, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_zero_batch(backend, device):
    m = fnn.TripletAttention().to(device).eval()
    m.backend = backend
    assert_empty_like_upstream(m, (0, 8, 4, 4), device)


def test_empty_axes_raise_like_upstream():
    m = fnn.TripletAttention().eval()
    for shape in [(2, 0, 4, 4), (2, 4, 0, 4), (2, 4, 4, 0)]:
        with pytest.raises(ValueError, match="non-zero C, H and W"):
            m(torch.randn(shape))


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_opcheck_passes(fmt):
    x = torch.randn(2, 6, 3, 5).to(memory_format=FORMATS[fmt])
    ops = torch.ops.attnkernels
    torch.library.opcheck(ops.triplet_pool.default, (x,))
    cmean, cmax, hmean, hmax, wmean, wmax = ops.triplet_pool(x)
    s = (torch.rand(2, 3, 5), torch.rand(2, 6, 5), torch.rand(2, 6, 3))
    torch.library.opcheck(ops.triplet_apply.default, (x, *s, True))
    dy = torch.randn_like(x)
    torch.library.opcheck(ops.triplet_backward_reduce.default, (dy, x, cmax, hmax, wmax))
    _, _, _, ctie, htie, wtie = ops.triplet_backward_reduce(dy, x, cmax, hmax, wmax)
    g = [torch.randn_like(t) for t in s]
    torch.library.opcheck(ops.triplet_backward_apply.default,
                          (dy, *s, True, ctie, g[0], g[0], htie, g[1], g[1], wtie, g[2], g[2]))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("bn_mode,spatial", [(0, 1), (1, 1), (2, 0)])
def test_opcheck_composite(backend, device, bn_mode, spatial):
    G = 2 + spatial
    kw = dict(device=device, requires_grad=True)
    x = torch.randn(2, 6, 3, 5, **kw)
    cw = torch.randn(G, 2, 3, 3, **kw)
    bn = [torch.randn(G, **kw), torch.randn(G, **kw)] if bn_mode else [None, None]
    running = [torch.zeros(G, device=device), torch.ones(G, device=device)] if bn_mode == 2 \
        else [None, None]
    torch.library.opcheck(triplet_functional.forward_op(backend),
                          (x, cw, None, *bn, *running, [bn_mode, spatial, 1], 1e-5))
    # save=0 (no backward expected): its fake too, on inputs that need no gradient
    args = [t.detach() if isinstance(t, torch.Tensor) else t
            for t in (x, cw, None, *bn, *running)]
    torch.library.opcheck(triplet_functional.forward_op(backend), (*args, [bn_mode, spatial, 0], 1e-5),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("bn_mode,spatial", [(0, 1), (1, 1), (2, 0)])
def test_save_0_gives_the_same_forward_without_the_backward_tensors(backend, device, bn_mode,
                                                                      spatial):
    torch.manual_seed(0)
    G = 2 + spatial
    kw = dict(device=device)
    tensors = [torch.randn(2, 6, 3, 5, **kw), torch.randn(G, 2, 3, 3, **kw), torch.randn(G, **kw),
               *([torch.rand(G, **kw) + 0.5, torch.randn(G, **kw)] if bn_mode else [None] * 2),
               *([torch.randn(G, **kw), torch.rand(G, **kw) + 0.5] if bn_mode == 2
                 else [None] * 2)]
    utils.assert_save_0_drops_only_backward_tensors(  # the maps and the conv outputs
        triplet_functional.forward_op(backend), tensors, [bn_mode, spatial], 1e-5, range(1, 10))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("grad", [False, True])
def test_the_functional_saves_only_where_autograd_records(backend, device, grad, monkeypatch):
    m = fnn.TripletAttention().to(device).eval()
    m.backend = backend
    x = torch.randn(2, 6, 5, 5, device=device)
    utils.assert_saves_only_where_autograd_records(triplet_functional, m, x, grad, monkeypatch)


@pytest.mark.parametrize("device", utils.native_devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 6, 3, 5), (2, 3, 7, 5)])  # the C < W and C < H planes
@pytest.mark.parametrize("bn_mode", [0, 1, 2])
@pytest.mark.parametrize("spatial", [0, 1])
@pytest.mark.parametrize("save", [0, 1])
def test_native_composite_is_bitwise_its_python_twin(device, dtype, shape, bn_mode, spatial, save,
                                                     monkeypatch):
    torch.manual_seed(0)
    G = 2 + spatial
    kw = dict(device=device)
    x = torch.randn(*shape, **kw).to(dtype)
    cw, cb = torch.randn(G, 2, 3, 3, **kw), torch.randn(G, **kw)
    bn = [torch.rand(G, **kw) + 0.5, torch.randn(G, **kw)] if bn_mode else [None, None]
    running = [torch.randn(G, **kw), torch.rand(G, **kw) + 0.5] if bn_mode == 2 \
        else [None, None]
    utils.assert_native_composite_is_python_twin(
        attnkernels.triplet, (x, cw, cb, *bn, *running, [bn_mode, spatial, save], 1e-5), monkeypatch)


def test_relu_in_a_branch_runs_reference_under_auto_and_raises_when_explicit():
    m = fnn.TripletAttention()
    m.hc.conv.relu = nn.ReLU()
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(m(x), reference_twin(m)(x))
    assert m.cw.conv.bn.num_batches_tracked.item() == 1  # the batch is counted once
    if HAS_CPU:
        m.backend = "cpu"
        with pytest.raises(RuntimeError, match="ReLU"):
            m(x)


def _args():
    return {"x": torch.randn(2, 4, 3, 3), "w": [torch.randn(1, 2, 7, 7) for _ in range(3)]}


@pytest.mark.parametrize("mutate,error,match", [
    (lambda a: {**a, "x": a["x"][0]}, ValueError, "x must be a 4-D"),
    (lambda a: {**a, "x": a["x"].long()}, TypeError, "x must be a floating-point"),
    (lambda a: {**a, "w": a["w"][:2]}, ValueError, "sequence of 3 tensors"),
    (lambda a: {**a, "w": a["w"][0]}, ValueError, "sequence of 3 tensors"),
    (lambda a: {**a, "w": [torch.randn(1, 2, 4, 4)] * 3}, ValueError, "k odd"),
    (lambda a: {**a, "w": a["w"][:2] + [torch.randn(1, 2, 3, 3)]}, ValueError,
     r"conv_weights\[2\] must have shape"),
    (lambda a: {**a, "w": a["w"][:2] + [None]}, ValueError, "every branch"),
])
def test_bad_input_names_the_argument(mutate, error, match):
    a = mutate(_args())
    with pytest.raises(error, match=match):
        F.triplet_attention(a["x"], a["w"])


def test_bad_batch_norm_arguments():
    x, w = torch.randn(2, 4, 3, 3), [torch.randn(1, 2, 3, 3)] * 3
    ones = [torch.ones(1)] * 3
    with pytest.raises(ValueError, match="bn_weights given with bn=False"):
        F.triplet_attention(x, w, bn_weights=ones)
    with pytest.raises(ValueError, match="running_means and running_vars"):
        F.triplet_attention(x, w, bn=True, running_means=ones)
    with pytest.raises(ValueError, match="momentum must be"):
        F.triplet_attention(x, w, bn=True, momentum=[0.1, 0.1])


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_compiled_passes_check_their_arguments():
    x = torch.randn(2, 4, 3, 5)
    with pytest.raises(RuntimeError, match=r"s_cw must be a contiguous Float tensor of shape \[2, 4, 5\]"):
        torch.ops.attnkernels.triplet_apply(x, torch.rand(2, 3, 5), torch.rand(2, 4, 3),
                                            torch.rand(2, 4, 3), False)
    with pytest.raises(RuntimeError, match="hmax must be"):
        torch.ops.attnkernels.triplet_backward_reduce(x, x, torch.rand(2, 3, 5),
                                                      torch.rand(2, 5, 4), torch.rand(2, 4, 3))


def test_flavour_factory_and_state_dict_keys():
    assert type(fnn.TripletAttentionModule()) is fnn.TripletAttention
    assert type(fnn.TripletAttentionModule(64, flavour="legacy")) is fnn.LegacyTripletAttention
    assert set(fnn.TripletAttention(no_spatial=True).state_dict()) == {
        f"{b}.conv.{p}" for b in ("cw", "hc")
        for p in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                  "bn.num_batches_tracked")}
    legacy = fnn.LegacyTripletAttention(64).state_dict()
    assert "SpatialGate.spatial.conv.weight" in legacy and "ChannelGateH.spatial.bn.bias" in legacy
    assert fnn.TripletAttention(kernel_size=3).hw.conv.conv.weight.shape == (1, 2, 3, 3)
    assert fnn.TripletAttention().cw.conv.bn.momentum == 0.01
    with pytest.raises(ValueError, match="unknown Triplet Attention flavour"):
        fnn.TripletAttentionModule(flavour="nope")
    r, f = ref.TripletAttention(), fnn.TripletAttention()
    f.load_state_dict(r.state_dict())
    r.load_state_dict(f.state_dict())
    assert type(copy.deepcopy(f)) is fnn.TripletAttention
