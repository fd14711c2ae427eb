"""Selective Kernel attention: every flavour x dtype x memory format x awkward
shape x backend, training and eval mode, forward and gradients against the
float64 reference module; the ops' arguments and saved tensors; timm's own
class and models; convert of upstream copies."""
import copy

import pytest
import torch
from torch import nn

import attnkernels
from attnkernels import functional as F
from attnkernels import nn as fnn
from attnkernels import reference as ref

import utils
from utils import BACKENDS, FORMATS, HAS_CPU
from utils import assert_same_bits_per_isa, run_module

# (3, 8, 5, 1): a column; (2, 6, 2, 1): two positions; (2, 32, 16, 16) and
# (2, 6, 23, 29) (667 positions) pass the CPU's lanes and the GPU blocks'
# rows. Batches of 2 or more: timm's gate BatchNorm needs two values per channel.
SHAPES = [(2, 24, 7, 9), (3, 8, 5, 1), (2, 6, 2, 1), (2, 32, 16, 16), (2, 6, 23, 29)]


def seed(C):
    return fnn.SKAttention(C, kernels=[1, 3, 5], reduction=4, L=8)


FLAVOURS = {
    "seed": seed,
    "seed_eval": lambda C: seed(C).eval(),
    "seed_depthwise": lambda C: fnn.SKAttention(C, kernels=[3, 5], reduction=16, group=C),
    "timm": lambda C: fnn.SelectiveKernel(C, rd_ratio=1 / 4),
    "timm_eval": lambda C: fnn.SelectiveKernel(C, kernel_size=[3, 5, 7], split_input=False).eval(),
}

# The shared matrices' flavours (tests/flavours.py): name -> C -> a fused module.
# Depthwise branches: the shared tests go to C = 4096, where dense 5x5
# convolutions would hold gigabytes of weights.
SHARED_FLAVOURS = {
    "seed": lambda C: fnn.SKAttention(C, kernels=[1, 3, 5], reduction=4, group=C, L=8),
    "timm": lambda C: fnn.SelectiveKernel(C, split_input=False, groups=C, rd_ratio=1 / 4),
}

# The shared tests' other entries (tests/flavours.py): see tests/test_nam.py.
MAIN_FLAVOUR = "seed"
# 17x19 = 323 positions past 256- and 32-position blocks, 137 channels past 4-,
# 32- and 128-channel blocks
TRITON_TILE_SHAPES = {"seed": (2, 137, 17, 19)}
TWO_RUNS = (lambda: SHARED_FLAVOURS["seed"](40), 40)
# The branch convolutions and BatchNorms and the gate network are library
# layers of the module (see tests/flavours.py).
LIBRARY_LAYERS = ("the branch convolutions and BatchNorms and timm's gate BatchNorm "
                  "(over the batch) are library layers")


def BATCH_NORM_VALUES(module, shape):
    """timm's gate BatchNorm normalises the pooled (N, d, 1, 1) map: N values."""
    N, _, H, W = shape
    return N if isinstance(module, fnn.SelectiveKernel) else N * H * W


def forward_op_case(backend, x, w):
    # sk_forward returns y alone: no statistics to keep non-differentiable
    return None


reference_twin = utils.reference_twin


@pytest.mark.parametrize("backend,device,flavour,dtype,fmt,shape",
                         list(utils.matrix_cases(FLAVOURS, [torch.float32], FORMATS, SHAPES)))
def test_matches_reference(backend, device, flavour, dtype, fmt, shape):
    # float32 only: in half precision the branch convolutions and the gate
    # (library ops, the same in eager and fused) round the logits, and with
    # the matrix's tripled weights (logits of 30 to 50) a softmax over them
    # moves with every ulp: no budget tells a bug from that.
    # test_functional_matches_reference holds the fused passes to the
    # half-precision budgets. timm's gate BatchNorm normalises over the batch
    # (2 or 3 values per channel here) in training mode: ill-conditioned.
    why = "timm's gate BatchNorm over 2 or 3 values" if flavour == "timm" else None
    fused = FLAVOURS[flavour](shape[1]).to(device)
    utils.assert_flavour_matches_reference(fused, backend, dtype, fmt, shape, device,
                                           why_nudged=why)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("dtype", utils.MODULE_DTYPES)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("shape,K", [((2, 24, 7, 9), 2), ((3, 8, 5, 1), 3), ((2, 40, 23, 29), 4),
                                     ((1, 5, 1, 1), 1)])
def test_functional_matches_reference(backend, device, dtype, fmt, shape, K):
    """The fused passes alone (branches given, a fixed float64 gate): forward,
    each branch's gradient and the gate's against float64, eager in dtype."""
    if backend == "triton" and device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter has no bfloat16 arithmetic")
    g = torch.Generator().manual_seed(sum(shape) + K)
    B, C = shape[:2]
    branches = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).double()
                .to(device=device, memory_format=FORMATS[fmt]) for _ in range(K)]
    w = (torch.randn(K * C, C, generator=g, dtype=torch.float64) * 3).to(device)
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).double().to(device)

    def run(fn, dt):
        bs = [b.to(dt).requires_grad_() for b in branches]
        ww = w.to(dt).requires_grad_()
        y = fn(bs, lambda s: (s @ ww.t()).view(B, K, C))
        grads = torch.autograd.grad(y, [*bs, ww], dy.to(dt))
        return [y, *grads]

    oracle = run(ref.selective_kernel, torch.float64)
    eager = run(ref.selective_kernel, dtype)
    fused = run(lambda bs, gate: F.selective_kernel(bs, gate, backend=backend), dtype)
    assert fused[0].is_contiguous(memory_format=FORMATS[fmt])
    names = ["y", *(f"dbranch{k}" for k in range(K)), "dw"]
    for name, f, e, o in zip(names, fused, eager, oracle):
        utils.assert_matches_oracle(f, e, o, name,
                                    terms=utils.parameter_terms(shape) if name == "dw" else 0.0)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("K", [1, 3])
def test_gradcheck(backend, device, fmt, K):
    C = 3
    branches = [torch.randn(2, C, 3, 4, dtype=torch.float64, device=device)
                .to(memory_format=FORMATS[fmt]).requires_grad_() for _ in range(K)]
    w1 = torch.randn(4, C, dtype=torch.float64, device=device, requires_grad=True)
    w2 = torch.randn(K * C, 4, dtype=torch.float64, device=device, requires_grad=True)

    def fn(w1, w2, *branches):
        gate = lambda s: (torch.tanh(s @ w1.t()) @ w2.t()).view(-1, K, C)  # noqa: E731
        return F.selective_kernel(branches, gate, backend=backend)

    assert utils.gradcheck(fn, (w1, w2, *branches), backend, device)


# an empty plane: the branch convolutions refuse it, upstream as here
test_zero_size = utils.zero_size_test(seed, shapes=((0, 8, 4, 4),))


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 8, 0, 3), (0, 8, 4, 4), (2, 0, 3, 3)])
def test_empty_branches_like_the_reference(backend, device, shape):
    outs = []
    for fn in (ref.selective_kernel,
               lambda bs, gate: F.selective_kernel(bs, gate, backend=backend)):
        bs = [torch.randn(shape, device=device, requires_grad=True) for _ in range(2)]
        w = torch.randn(2 * shape[1], shape[1], device=device, requires_grad=True)
        y = fn(bs, lambda s: (s @ w.t()).view(shape[0], 2, shape[1]))
        y.sum().backward()
        outs.append((y, bs[0].grad, bs[1].grad, w.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, equal_nan=True)


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(1, 24, 9, 7), (7, 40, 30, 29)])
def test_cpu_independent_of_thread_count(fmt, shape):
    # the fused passes (the library's convolutions promise nothing of the kind)
    g = torch.Generator().manual_seed(5)
    bs = [torch.randn(shape, generator=g).to(memory_format=FORMATS[fmt]) for _ in range(3)]
    logits = torch.randn(shape[0], 3, shape[1], generator=g)
    dy = torch.randn(shape, generator=g).to(memory_format=FORMATS[fmt])
    ops = torch.ops.attnkernels
    runs, before = [], torch.get_num_threads()
    try:
        for threads in (1, 2, 3, 8):
            torch.set_num_threads(threads)
            dbs, dl = ops.sk_backward(dy, bs, logits)
            runs.append([ops.sk_pool(bs), ops.sk_forward(bs, logits), *dbs, dl])
    finally:
        torch.set_num_threads(before)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert torch.equal(a, b)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("K", [1, 2, 4])
def test_opcheck(fmt, K):
    branches = [torch.randn(2, 6, 3, 5).to(memory_format=FORMATS[fmt]).requires_grad_()
                for _ in range(K)]
    logits = torch.randn(2, K, 6, requires_grad=True)
    ops = torch.ops.attnkernels
    torch.library.opcheck(ops.sk_pool.default, (branches,))
    torch.library.opcheck(ops.sk_forward.default, (branches, logits))
    torch.library.opcheck(ops.sk_backward.default,
                          (torch.randn_like(branches[0]), [b.detach() for b in branches],
                           logits.detach()))


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_saves_only_the_branches_and_the_logits(backend, device):
    # no stacked (K, B, C, H, W) tensor, no sum U, no weighted branches: the
    # x-sized tensors kept for backward are the branches themselves
    branches = [torch.randn(2, 6, 8, 8, device=device, requires_grad=True) for _ in range(3)]
    gate = nn.Linear(6, 18).to(device)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        F.selective_kernel(branches, lambda s: gate(s).view(2, 3, 6), backend=backend)
    big = [t for t in saved if t.numel() >= branches[0].numel()]
    assert sorted(t.data_ptr() for t in big) == sorted(b.data_ptr() for b in branches)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_logits_of_another_dtype_and_a_wrong_gate(backend, device):
    # fp16 branches, fp32 logits (a gate kept in fp32): the softmax runs in fp32
    branches = [torch.randn(2, 4, 5, 5, device=device).half() for _ in range(2)]
    logits = torch.randn(2, 2, 4, device=device)
    y = F.selective_kernel(branches, lambda s: logits, backend=backend)
    expect = ref.selective_kernel([b.double() for b in branches], lambda s: logits.double())
    torch.testing.assert_close(y.double(), expect, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"gate must return logits of shape \(N, K, C\)"):
        F.selective_kernel(branches, lambda s: logits[:, :1], backend=backend)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="branches is empty"):
        F.selective_kernel([], lambda s: s)
    with pytest.raises(ValueError, match=r"branches\[1\]: x must be a 4-D"):
        F.selective_kernel([torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3)], lambda s: s)


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_branches_that_differ_run_the_reference_or_raise():
    a = torch.randn(2, 4, 5, 5)
    b = torch.randn(2, 4, 5, 5).to(memory_format=torch.channels_last)
    gate = lambda s: torch.stack([s, -s], 1)  # noqa: E731
    torch.testing.assert_close(F.selective_kernel([a, b], gate),
                               ref.selective_kernel([a, b], gate))
    with pytest.raises(RuntimeError, match="branches differ in shape, dtype, device or memory"):
        F.selective_kernel([a, b], gate, backend="cpu")
    nine = [a] * 9
    with pytest.raises(RuntimeError, match="9 branches: the fused kernels take at most 8"):
        F.selective_kernel(nine, lambda s: torch.stack([s] * 9, 1), backend="cpu")


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_compiled_ops_check_their_arguments():
    ops = torch.ops.attnkernels
    a = torch.randn(2, 4, 3, 3)
    with pytest.raises(RuntimeError, match="branches must hold 1 to 8"):
        ops.sk_pool([a] * 9)
    with pytest.raises(RuntimeError, match=r"branches\[1\] must match branches\[0\]"):
        ops.sk_pool([a, a[:1]])
    with pytest.raises(RuntimeError, match=r"branches\[1\] must match branches\[0\]"):
        ops.sk_forward([a, a.double()], torch.randn(2, 2, 4))
    with pytest.raises(RuntimeError, match=r"logits must have shape \(2, 2, 4\)"):
        ops.sk_forward([a, a], torch.randn(2, 4, 2))
    with pytest.raises(RuntimeError, match="dy must match"):
        ops.sk_backward(a[:1], [a, a], torch.randn(2, 2, 4))


def test_flavour_factory_and_state_dict():
    assert type(fnn.SelectiveKernelAttention(8)) is fnn.SKAttention
    assert type(fnn.SelectiveKernelAttention(8, flavour="timm")) is fnn.SelectiveKernel
    with pytest.raises(ValueError, match="unknown Selective Kernel flavour"):
        fnn.SelectiveKernelAttention(8, flavour="nope")
    assert fnn.SKAttention(8).state_dict().keys() == ref.SKAttention(8).state_dict().keys()
    assert fnn.SKAttention(64).d == 32 and fnn.SKAttention(512).d == 64


@pytest.mark.parametrize("kwargs", [dict(), dict(out_channels=48, kernel_size=[3, 5, 7], split_input=False),
                                    dict(keep_3x3=False, split_input=False, stride=2),
                                    dict(rd_ratio=1 / 8, rd_divisor=16, groups=4)])
def test_timm_reference_is_timm(kwargs):
    """The re-created SelectiveKernel is timm's: same keys and shapes, and with
    timm's weights the same outputs and gradients (float64, training mode)."""
    timm_layers = pytest.importorskip("timm.layers")
    theirs = timm_layers.SelectiveKernel(32, **kwargs).double()
    ours = ref.SelectiveKernel(32, **kwargs).double()
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    torch.manual_seed(0)
    for p in theirs.parameters():
        nn.init.normal_(p)
    ours.load_state_dict(theirs.state_dict())
    fused = fnn.SelectiveKernel(32, **kwargs).double()
    fused.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 32, 11, 10, dtype=torch.float64)
    dy = torch.randn_like(theirs(x))
    y_t, dx_t, _ = run_module(theirs, x, dy)
    for m in (ours, fused):
        y, dx, _ = run_module(m, x, dy)
        torch.testing.assert_close(y, y_t)
        torch.testing.assert_close(dx, dx_t)


def test_timm_builds_fused_skresnet():
    """With the timm integration registered, timm's SK-ResNet builds the drop-in
    SelectiveKernel in every block; its outputs are the original model's."""
    timm = pytest.importorskip("timm")
    from attnkernels.integrations import timm as ak_timm

    torch.manual_seed(0)
    original = timm.create_model("skresnet18", num_classes=10).double().eval()
    with ak_timm.fused_attention():
        fused = timm.create_model("skresnet18", num_classes=10).double().eval()
    kinds = {type(m) for m in fused.modules()}
    assert fnn.SelectiveKernel in kinds
    assert not any(type(m).__name__ == "SelectiveKernel" and type(m) is not fnn.SelectiveKernel
                   for m in fused.modules())
    fused.load_state_dict(original.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(fused(x), original(x))


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_torch_export_keeps_the_fused_ops_with_a_dynamic_batch():
    m = SHARED_FLAVOURS["seed"](8).eval()
    x = torch.randn(2, 8, 9, 7)
    program = torch.export.export(m, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"attnkernels.sk_pool.default", "attnkernels.sk_forward.default"} <= targets
    for batch in (2, 3):
        xb = torch.randn(batch, 8, 9, 7)
        with torch.no_grad():
            assert torch.equal(program.module()(xb), m(xb))


class SKCopy(nn.Module):
    """Seed 002's SKAttention pasted into a project under another name."""

    def __init__(self, channel, kernels=(1, 3)):
        super().__init__()
        self.convs = nn.ModuleList([nn.Sequential(nn.Conv2d(channel, channel, k, padding=k // 2),
                                                  nn.BatchNorm2d(channel), nn.ReLU())
                                    for k in kernels])
        self.fc = nn.Linear(channel, 8)
        self.fcs = nn.ModuleList([nn.Linear(8, channel) for _ in kernels])
        self.softmax = nn.Softmax(dim=0)

    def forward(self, x):
        outs = [c(x) for c in self.convs]
        z = self.fc(sum(outs).mean((2, 3)))
        a = self.softmax(torch.stack([f(z) for f in self.fcs], 0))
        return sum(a[k][:, :, None, None] * o for k, o in enumerate(outs))


class SKSigmoid(SKCopy):
    """A copy that gates each branch by a sigmoid: the probe tells."""

    def forward(self, x):
        outs = [c(x) for c in self.convs]
        z = self.fc(sum(outs).mean((2, 3)))
        return sum(torch.sigmoid(f(z))[:, :, None, None] * o for f, o in zip(self.fcs, outs))


class SKNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(ref.SKAttention(8, kernels=[1, 3], L=4),
                                    ref.SelectiveKernel(8, kernel_size=[3, 5]), SKCopy(8),
                                    SKSigmoid(8))

    def forward(self, x):
        return self.blocks(self.stem(x))


@pytest.mark.parametrize("training", [True, False])
def test_convert_sk_flavours_same_outputs_gradients_and_statistics(training):
    timm_layers = pytest.importorskip("timm.layers")
    net = SKNet().double().train(training)
    net.blocks.add_module("4", timm_layers.SelectiveKernel(8, 8).double().train(training))
    original = copy.deepcopy(net)
    fc = original.blocks[0].fc
    fused, report = attnkernels.convert(original)
    converted = {n: new for n, _, new in report.converted}
    assert converted == {"blocks.0": "SKAttention", "blocks.1": "SelectiveKernel",
                         "blocks.2": "SKAttention", "blocks.4": "SelectiveKernel"}, str(report)
    left = {n: why for n, _, why in report.left_alone}
    assert set(left) == {"blocks.3"} and "output differs" in left["blocks.3"], str(report)
    assert fused.blocks[0].fc is fc  # adopted, not rebuilt
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    dy = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    utils.assert_converted_runs_like(net, fused, x, dy)


_ISA_SCRIPT = """
import sys, torch, attnkernels
g = torch.Generator().manual_seed(0)
out = []
ops = torch.ops.attnkernels
for fmt in (torch.contiguous_format, torch.channels_last):
    for dtype in (torch.float32, torch.bfloat16):
        bs = [torch.randn(3, 40, 17, 19, generator=g).to(dtype).to(memory_format=fmt)
              for _ in range(3)]
        logits = torch.randn(3, 3, 40, generator=g)
        dy = torch.randn(3, 40, 17, 19, generator=g).to(dtype).to(memory_format=fmt)
        dbs, dl = ops.sk_backward(dy, bs, logits)
        out += [ops.sk_pool(bs), ops.sk_forward(bs, logits), *dbs, dl]
torch.save(out, sys.argv[1])
"""


@pytest.mark.skipif(not HAS_CPU, reason="no C++ extension")
def test_baseline_and_avx2_builds_give_the_same_bits(tmp_path):
    """The element loops' AVX2 instantiation and the baseline one round alike."""
    assert_same_bits_per_isa(_ISA_SCRIPT, tmp_path)
