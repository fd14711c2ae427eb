"""CoT attention (library convolutions and BatchNorms, the attention
embedding's averaged last conv, our softmax gate): the converted module
against the float64 original, forward, every gradient and the BatchNorm
statistics, eval and train, each dtype and layout; the fused softmax gate
alone on every backend (forward, the three gradients, extremes, opcheck,
thread count, instruction sets); convert, revert, hooks, compile."""
import math

import pytest
import torch
from torch import nn

import attnkernels
from attnkernels.cot import functional as CF
from attnkernels.cot import modules as fnn
from attnkernels.cot import reference as ref

import utils
from utils import (BACKENDS, FORMATS, HAS_CPU, MODULE_DTYPES,
                   assert_compiled_matches_eager_and_float64, assert_converted_matches_float64,
                   assert_matches_oracle, assert_same_bits_per_isa, converted_as_itself,
                   unsettle_batch_norms)

WHY_NUDGED = ("CoT is a small network (grouped conv, BatchNorms, ReLUs, a softmax over the "
              "map): the original's own error depends on its rounding path")

# (dim, kernel_size, input shape): dims divisible by 4 (the grouped conv), odd maps
CASES = {"dim16-k3": (16, 3, (2, 16, 5, 7)), "dim32-k5": (32, 5, (2, 32, 6, 3)),
         "dim8-k1": (8, 1, (3, 8, 4, 4))}


def shared(C):
    """The shared tests' CoT (tests/flavours.py) at any C: kernel 3 up to 64
    channels, else 1 (their C = 4096 would give the original's last conv
    9 * 4096 x 2048 weights). Upstream takes C divisible by 4 (its grouped
    conv) alone; for other C the same layers are built at C, key_embed's conv
    with the largest group count that divides C, attention_embed's hidden
    width at least 2 (a one-channel map is NCHW- and channels_last-dense at
    once: the conv after it returns NCHW for a channels_last input)."""
    k = 3 if C <= 64 else 1
    m = fnn.CoTAttention(C if C % 4 == 0 else 4, k)
    if C % 4:
        hidden = max(2, C // 2)
        m.dim = C
        m.key_embed = nn.Sequential(
            nn.Conv2d(C, C, k, padding=k // 2, groups=math.gcd(C, 4), bias=False),
            nn.BatchNorm2d(C), nn.ReLU())
        m.value_embed = nn.Sequential(nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C))
        m.attention_embed = nn.Sequential(
            nn.Conv2d(2 * C, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, k * k * C, 1))
    return unsettle_batch_norms(m)


# The module matrix (utils.flavour_matrix_test): dims divisible by 4 (the grouped conv)
FLAVOURS = {
    "external": lambda C: unsettle_batch_norms(fnn.CoTAttention(C, 3)),
    "external_eval": lambda C: unsettle_batch_norms(fnn.CoTAttention(C, 3)).eval(),
}
# (2, 12, 23, 29): 667 positions, past the CPU's lanes and the GPU blocks' rows
SHAPES = [(2, 16, 5, 7), (3, 8, 5, 1), (2, 12, 23, 29)]

# The shared matrices' flavours (tests/flavours.py): name -> C -> a fused module.
SHARED_FLAVOURS = {"external": shared}
# The shared tests' other entries (tests/flavours.py): see tests/test_nam.py.
MAIN_FLAVOUR = "external"
# 17x19 = 323 positions past 256- and 32-position blocks, 69 channels past 4-
# and 32-channel blocks
TRITON_TILE_SHAPES = {"external": (2, 69, 17, 19)}
TWO_RUNS = (lambda: shared(40), 40)
LIBRARY_LAYERS = ("CoT's convolutions and BatchNorms (over the batch in training) are "
                  "library layers")
THREAD_DEPENDENT_LAYERS = "CoT's convolutions are library convolutions"


def forward_op_case(backend, x, w):
    if backend == "triton":
        from attnkernels.cot import triton as _  # noqa: F401  (registers the *_triton ops)
    op = getattr(torch.ops.attnkernels, "cot_forward" + ("_triton" if backend == "triton" else ""))
    return op.default, (x, x * 2, x * 3)


reference_twin = utils.reference_twin


@pytest.mark.parametrize("backend,device,flavour,dtype,fmt,shape",
                         list(utils.matrix_cases(FLAVOURS, [torch.float32], FORMATS, SHAPES)))
def test_matches_reference(backend, device, flavour, dtype, fmt, shape):
    # float32: half precision of the whole module is test_matches_float64_reference's
    # (auto backend) and, per backend, test_softmax_gate_matches_reference's
    fused = FLAVOURS[flavour](shape[1]).to(device)
    utils.assert_flavour_matches_reference(fused, backend, dtype, fmt, shape, device,
                                           why_nudged=WHY_NUDGED)


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


# ---- the softmax gate alone: k1 + softmax(att over H*W) * v

def _gate_operands(shape, fmt, device, dtype, seed, spread=3.0):
    """att (spread: logits of a few units, a peaked softmax), v, k1 and dy,
    float64 values representable in dtype, in layout fmt."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for scale in (spread, 1.0, 1.0, 1.0):
        t = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype).double()
        out.append(t.to(device=device, memory_format=FORMATS[fmt]))
    return out


def _gate_run(fn, operands, dtype):
    att, v, k1, dy = operands
    ins = [t.to(dtype).requires_grad_() for t in (att, v, k1)]
    y = fn(*ins)
    return [y, *torch.autograd.grad(y, ins, dy.to(dtype))]


# (2, 5, 1, 1): one position; (2, 3, 40, 41): 1640 positions past the CPU's
# lanes and the GPU blocks' rows; (1, 37, 6, 7): 37 channels past a block of 32
GATE_SHAPES = [(2, 6, 5, 7), (2, 5, 1, 1), (2, 3, 40, 41), (1, 37, 6, 7)]


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", MODULE_DTYPES + [torch.float64], ids=str)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("shape", GATE_SHAPES)
def test_softmax_gate_matches_reference(backend, device, dtype, fmt, shape):
    """y, datt, dv and dk1 against float64, eager in dtype the budget."""
    if backend == "triton" and device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter has no bfloat16 arithmetic")
    operands = _gate_operands(shape, fmt, device, dtype, seed=sum(shape))
    oracle = _gate_run(ref.cot_softmax_gate, operands, torch.float64)
    eager = _gate_run(ref.cot_softmax_gate, operands, dtype)
    fused = _gate_run(lambda a, v, k: CF.cot_softmax_gate(a, v, k, backend=backend), operands,
                      dtype)
    assert fused[0].is_contiguous(memory_format=FORMATS[fmt])
    for name, f, e, o in zip(["y", "datt", "dv", "dk1"], fused, eager, oracle):
        assert f.dtype == dtype, name
        assert_matches_oracle(f, e, o, name)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_softmax_gate_gradcheck(backend, device, fmt):
    att, v, k1 = (torch.randn(2, 3, 3, 4, dtype=torch.float64, device=device)
                  .to(memory_format=FORMATS[fmt]).requires_grad_() for _ in range(3))
    assert utils.gradcheck(lambda a, v, k: CF.cot_softmax_gate(a, v, k, backend=backend),
                           (att, v, k1), backend, device)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_softmax_gate_extremes_like_the_reference(backend, device, fmt):
    """Logits of 1e4 (the max subtracted first), a plane's last logit 200
    above the rest (exp would overflow were the max taken over less than
    the whole plane), -inf entries (weight 0), a plane of -inf and a plane
    with a NaN (NaN everywhere in it, as torch's softmax), forward and
    gradients, float32."""
    att, v, k1, dy = _gate_operands((2, 4, 5, 6), fmt, device, torch.float32, seed=1)
    att = att.clone()
    att[0, 0] += 1e4
    att[0, 3, -1, -1] = 200.0
    att[0, 1, 2] = -math.inf
    att[1, 2] = -math.inf
    att[1, 3, 1, 1] = math.nan
    outs = [_gate_run(fn, (att, v, k1, dy), torch.float32) for fn in (
        ref.cot_softmax_gate, lambda a, v, k: CF.cot_softmax_gate(a, v, k, backend=backend))]
    for name, want, got in zip(["y", "datt", "dv", "dk1"], *outs):
        assert torch.equal(want.isnan(), got.isnan()), name
        torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 8, 0, 3), (0, 8, 4, 4), (2, 0, 3, 3)])
def test_softmax_gate_empty_like_the_reference(backend, device, shape):
    outs = []
    for fn in (ref.cot_softmax_gate, lambda a, v, k: CF.cot_softmax_gate(a, v, k, backend=backend)):
        ins = [torch.randn(shape, device=device, requires_grad=True) for _ in range(3)]
        y = fn(*ins)
        y.sum().backward()
        outs.append((y, *(t.grad for t in ins)))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, equal_nan=True)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_softmax_gate_saves_att_v_and_two_statistics(backend, device):
    # no softmax output kept: att and v (which their convolutions' backward
    # keeps anyway) and the (N, C) max and inverse sum
    att, v, k1 = (torch.randn(2, 6, 8, 8, device=device, requires_grad=True) for _ in range(3))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        CF.cot_softmax_gate(att, v, k1, backend=backend)
    big = [t for t in saved if t.numel() >= att.numel()]
    assert sorted(t.data_ptr() for t in big) == sorted([att.data_ptr(), v.data_ptr()])
    assert sorted(t.shape for t in saved if t.numel() < att.numel()) == [(2, 6), (2, 6)]


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_operands_that_differ_run_the_reference_or_raise():
    att, v = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    k1 = torch.randn(2, 4, 5, 5).to(memory_format=torch.channels_last)
    torch.testing.assert_close(CF.cot_softmax_gate(att, v, k1), ref.cot_softmax_gate(att, v, k1))
    with pytest.raises(RuntimeError, match="att, v and k1 differ in shape, dtype, device or "
                                           "memory layout"):
        CF.cot_softmax_gate(att, v, k1, backend="cpu")
    with pytest.raises(ValueError, match="v: x must be a 4-D"):
        CF.cot_softmax_gate(att, v[0], k1)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_compiled_ops_check_their_arguments():
    ops = torch.ops.attnkernels
    a = torch.randn(2, 4, 3, 3)
    with pytest.raises(RuntimeError, match="v must match att"):
        ops.cot_forward(a, a[:1], a)
    with pytest.raises(RuntimeError, match="k1 must match att"):
        ops.cot_forward(a, a, a.double())
    y, mx, inv = ops.cot_forward(a, a, a)
    with pytest.raises(RuntimeError, match="dy must match att"):
        ops.cot_backward(a[:1], a, a, mx, inv)
    with pytest.raises(RuntimeError, match=r"max must be a contiguous \(2, 4\)"):
        ops.cot_backward(a, a, a, mx[:, :2], inv)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_opcheck(fmt):
    att, v, k1 = (torch.randn(2, 6, 3, 5).to(memory_format=FORMATS[fmt]).requires_grad_()
                  for _ in range(3))
    ops = torch.ops.attnkernels
    torch.library.opcheck(ops.cot_forward.default, (att, v, k1))
    with torch.no_grad():
        _, mx, inv = ops.cot_forward(att, v, k1)
    torch.library.opcheck(ops.cot_backward.default,
                          (torch.randn_like(att), att.detach(), v.detach(), mx, inv))


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(1, 24, 9, 7), (7, 40, 30, 29)])
def test_cpu_independent_of_thread_count(fmt, shape):
    att, v, k1, dy = (t.float() for t in _gate_operands(shape, fmt, "cpu", torch.float32, 5))
    ops = torch.ops.attnkernels
    runs, before = [], torch.get_num_threads()
    try:
        for threads in (1, 2, 3, 8):
            torch.set_num_threads(threads)
            y, mx, inv = ops.cot_forward(att, v, k1)
            runs.append([y, mx, inv, *ops.cot_backward(dy, att, v, mx, inv)])
    finally:
        torch.set_num_threads(before)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert torch.equal(a, b)


_ISA_SCRIPT = """
import sys, torch, attnkernels
g = torch.Generator().manual_seed(0)
out = []
ops = torch.ops.attnkernels
for fmt in (torch.contiguous_format, torch.channels_last):
    for dtype in (torch.float32, torch.bfloat16):
        att, v, k1, dy = (torch.randn(3, 40, 17, 19, generator=g).mul(3).to(dtype)
                          .to(memory_format=fmt) for _ in range(4))
        y, mx, inv = ops.cot_forward(att, v, k1)
        out += [y, mx, inv, *ops.cot_backward(dy, att, v, mx, inv)]
torch.save(out, sys.argv[1])
"""


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_baseline_and_avx2_builds_give_the_same_bits(tmp_path):
    """The element loops' AVX2 instantiation and the baseline one round alike."""
    assert_same_bits_per_isa(_ISA_SCRIPT, tmp_path)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_empty_batch(backend, device):
    """Upstream refuses an empty batch (its ``view(bs, c, -1)``, after two of
    its BatchNorms have counted it); the drop-in gives an empty y and dx and
    zero parameter gradients. (An empty plane: the convolutions refuse it,
    upstream as here.)"""
    m = fnn.CoTAttention(8, 3).to(device)
    m.backend = backend
    x = torch.randn(0, 8, 4, 4, device=device, requires_grad=True)
    with pytest.raises(RuntimeError):
        m.reference_module()(x)
    y = m(x)
    y.sum().backward()
    assert y.shape == x.shape and x.grad.shape == x.shape
    assert all(p.grad is None or not p.grad.any() for p in m.parameters())
