"""Shared test helpers: backends on this machine, the case matrix, reference twins
and the oracle comparison."""
import copy
import os
import subprocess
import sys

import pytest
import torch

import attnkernels

HAS_CPU = attnkernels.available_backends()["cpu"] is None
# the dtypes and memory formats every family's module is checked in
MODULE_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}

# The dtype's floor: a few units of its rounding. Absolute at least: the tests'
# inputs, upstream gradients and parameters are O(1), so a sum that cancels to a
# small result (a BatchNorm bias's gradient, zero in exact arithmetic before a
# training-mode BatchNorm) still rounds its O(1) terms.
EPS = {torch.float64: 1e-12, torch.float32: 4e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
# No budget above this fraction of max(the tensor's scale, 1), whatever eager's error.
CAP = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}

def fused_backends():
    """(backend, device) pairs this machine can run."""
    avail = attnkernels.available_backends()
    out = []
    if avail["cpu"] is None:
        out.append(("cpu", "cpu"))
    if avail["cuda"] is None:
        out.append(("cuda", "cuda"))
    if avail["triton"] is None:
        out.append(("triton", "cuda" if torch.cuda.is_available() else "cpu"))
    return out


def assert_matches_oracle(fused, eager, oracle, name="", eager_nudged=None, why_nudged=None,
                          terms=0.0, eager_elsewhere=None):
    """fused vs the float64 oracle, by flash-attention's rule (no worse than twice
    the eager low-precision error, plus the dtype's floor EPS), checked twice:
    - every element: max |fused - oracle| <= 2 max |eager - oracle| + EPS s, and
      never more than CAP s, where s = max(the oracle's largest magnitude, terms, 1);
    - the whole tensor (2-norms): ||fused - oracle|| <= 2 ||eager - oracle|| +
      EPS S, at most CAP S, where S = max(||oracle||, max(terms, 1) sqrt(numel)): errors spread
      over many elements, and over the small ones, count too.
    A zeroed output, or one 1e-3 (fp32) / 2e-2 (bf16) off, fails
    (tests/test_harness.py). terms: for a sum of K unit terms (a parameter's
    gradient), sqrt(K), the size of its partial sums, which round at that size
    in any order however small the sum.

    eager_nudged: the eager result for x moved by one ulp (see ``nudged``), only
    for a case the caller names ill-conditioned (``why_nudged``, e.g. a whole
    network): eager's own error can be luckily small there while any other
    rounding order moves the result much more, so how far one ulp of input moves
    eager joins the budget, and CAP does not apply.

    eager_elsewhere: (eager, oracle) at x moved by one ulp, a second sample of
    eager's error (the budget takes the larger): one sample can be luckily small
    (seen: Selective Kernel's fcs.2.weight gradient, eager 2.3e-5 off at x and
    0.9e-4 to 2.7e-4 at five neighbours, fused 2.6e-4)."""
    assert fused.dtype == eager.dtype, (name, fused.dtype, eager.dtype)
    assert fused.shape == oracle.shape, (name, fused.shape, oracle.shape)
    assert (eager_nudged is None) == (why_nudged is None), "a nudged budget needs its reason"
    f, e, o = fused.double(), eager.double(), oracle.double()
    nan = o.isnan()
    if nan.any():  # upstream's own NaN (SimAM on a 1x1 map): the same places, the rest compared
        assert torch.equal(f.isnan(), nan), f"{name}: NaN where the float64 oracle has none, or not"
        f, e, o = f[~nan], e[~nan], o[~nan]
        eager_nudged = None if eager_nudged is None else eager_nudged.double()[~nan]
    if not o.numel():
        return
    scale = max(o.abs().max().item(), terms, 1.0)
    err, base = (f - o).abs().max().item(), (e - o).abs().max().item()
    norm, norm_err, norm_base = o.norm().item(), (f - o).norm().item(), (e - o).norm().item()
    if eager_elsewhere is not None:
        e2, o2 = (t.double() for t in eager_elsewhere)
        d2 = (e2 - o2)[~(o2.isnan() | e2.isnan())]  # upstream's NaN: checked at x, not here
        if d2.numel():
            base, norm_base = max(base, d2.abs().max().item()), max(norm_base, d2.norm().item())
    if eager_nudged is not None:
        n = eager_nudged.double()
        base = max(base, (n - e).abs().max().item())
        norm_base = max(norm_base, (n - e).norm().item())
    floor, cap = EPS[fused.dtype], CAP[fused.dtype]
    if eager_nudged is not None:
        cap = float("inf")
    bound = min(2 * base + floor * scale, cap * scale)
    assert err <= bound, (f"{name}: error {err:.3g} > bound {bound:.3g} (eager error {base:.3g},"
                          f" scale {scale:.3g})")
    norm_scale = max(norm, max(terms, 1.0) * o.numel() ** 0.5)  # as max(scale, terms, 1)
    norm_bound = min(2 * norm_base + floor * norm_scale, cap * norm_scale)
    assert norm_err <= norm_bound, (f"{name}: error norm {norm_err:.3g} > {norm_bound:.3g} "
                                    f"(eager {norm_base:.3g}, oracle {norm:.3g})")


def parameter_terms(shape) -> float:
    """``terms`` of a parameter's gradient: a sum over N*H*W positions."""
    return (shape[0] * shape[2] * shape[3]) ** 0.5


# why a whole network's comparison takes the nudged budget
WHOLE_NETWORK = "a whole network: its convs, BatchNorms and ReLU kinks amplify one ulp of input"


def nudged(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """x with every element moved by one ulp of its dtype, up or down at random."""
    g = torch.Generator().manual_seed(seed)
    up = torch.rand(x.shape, generator=g) < 0.5
    inf = torch.full_like(x, float("inf"))
    return torch.nextafter(x, torch.where(up.to(x.device), inf, -inf)).to(
        memory_format=torch.channels_last if (not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last)) else torch.contiguous_format)


def unsettle_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Every BatchNorm2d of ``model`` with its affine and running statistics
    moved off the identity they start as (which would hide an error), from
    torch's global generator."""
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return model


def run_module(module, x, dy, forward=None):
    """(y, dx, {parameter name: grad}) of one forward and backward of ``module``
    (run through ``forward``, a torch.compile of it say, when given); the
    gradients are this run's alone (copies, not accumulated). ``dy`` None: the
    forward alone under torch.no_grad, (y, None, {})."""
    if dy is None:
        with torch.no_grad():
            return (module if forward is None else forward)(x), None, {}
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    y = (module if forward is None else forward)(x)
    y.backward(dy)
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()}
    return y, x.grad, grads


def gradcheck(f, inputs, backend: str, device: str) -> bool:
    """torch.autograd.gradcheck at the tests' tolerances (eps 1e-6, atol 1e-6,
    rtol 1e-4). Under the Triton interpreter in fast mode: the analytical and
    numerical gradients compared along random directions instead of element
    by element (a wrong gradient still fails; the whole Jacobian took about
    ten minutes of CI in the interpreter); the whole Jacobian elsewhere."""
    fast = backend == "triton" and device == "cpu"
    return torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast)


def assert_converted_runs_like(net, fused, x, dy) -> None:
    """A converted network (``fused``) against the original ``net`` (float64):
    the same output, input and parameter gradients and buffers afterwards."""
    y_r, dx_r, dw_r = run_module(net, x, dy)
    y_f, dx_f, dw_f = run_module(fused, x, dy)
    torch.testing.assert_close(y_f, y_r)
    torch.testing.assert_close(dx_f, dx_r)
    for name in dw_r:
        torch.testing.assert_close(dw_f[name], dw_r[name], msg=name)
    for (name, a), b in zip(net.named_buffers(), fused.buffers()):
        torch.testing.assert_close(b, a, msg=name)


def assert_same_runs(runs):
    """Every (y, dx, grads) of ``runs`` bitwise equal to the first."""
    y0, dx0, dw0 = runs[0]
    for y, dx, dw in runs[1:]:
        assert torch.equal(y, y0) and torch.equal(dx, dx0)
        assert dw.keys() == dw0.keys()
        for n in dw0:
            if dw0[n] is not None:
                assert torch.equal(dw[n], dw0[n]), n


def runs_per_thread_count(module, x, dy, threads=(1, 2, 3, 8)):
    """run_module under each CPU thread count."""
    before = torch.get_num_threads()
    try:
        runs = []
        for n in threads:
            torch.set_num_threads(n)
            runs.append(run_module(module, x, dy))
    finally:
        torch.set_num_threads(before)
    return runs


def assert_module_matches_reference(fused, reference_twin, dtype, memory_format, shape, device,
                                    why_nudged=None):
    """Forward and every gradient of ``fused`` (a float module, its backend set) in
    ``dtype`` against its reference twin in float64 (the oracle), with the
    eager reference in ``dtype`` setting the error budget; outputs keep x's format.
    why_nudged: the reason this case is ill-conditioned (assert_matches_oracle)."""
    with torch.no_grad():  # gates away from 0.5 so errors in the gate show
        for p in fused.parameters():
            p.mul_(3.0)
    # Everyone starts from the parameters rounded to dtype: the oracle computes
    # exactly what the low-precision module was asked to compute.
    fused = fused.to(dtype)
    oracle = reference_twin(fused).double()
    eager = reference_twin(fused)
    # The same holds for the inputs: an argmax is discontinuous, and rounding x
    # to the dtype can create or reorder its ties.
    x = torch.randn(shape, device=device, dtype=torch.float64).to(dtype).double()
    dy = torch.randn(shape, device=device, dtype=torch.float64).to(dtype).double()
    x, dy = x.to(memory_format=memory_format), dy.to(memory_format=memory_format)
    y_o, dx_o, dw_o = run_module(oracle, x, dy)
    y_e, dx_e, dw_e = run_module(eager, x.to(dtype), dy.to(dtype))
    y_f, dx_f, dw_f = run_module(fused, x.to(dtype), dy.to(dtype))
    assert y_f.is_contiguous(memory_format=memory_format)
    assert dx_f.is_contiguous(memory_format=memory_format)
    nudge = {}
    if why_nudged:
        y_n, dx_n, dw_n = run_module(eager, nudged(x.to(dtype)), dy.to(dtype))
        nudge = {"y": y_n, "dx": dx_n, **dw_n}
    budget = lambda name: dict(eager_nudged=nudge[name], why_nudged=why_nudged) if nudge else {}
    assert_matches_oracle(y_f, y_e, y_o, "y", **budget("y"))
    assert_matches_oracle(dx_f, dx_e, dx_o, "dx", **budget("dx"))
    assert dw_f.keys() == dw_o.keys()
    for name in dw_o:
        if dw_o[name] is None:  # a parameter upstream never uses (the seeds' CA_Block.bn)
            assert dw_f[name] is None, name
            continue
        assert_matches_oracle(dw_f[name], dw_e[name], dw_o[name], name, **budget(name),
                              terms=parameter_terms(shape))


def assert_same_bits_per_isa(script: str, tmp_path) -> None:
    """``script`` (which torch.save()s a list of tensors to sys.argv[1]) gives the
    same bits with the CPU kernels' AVX2 instantiation (picked where the CPU has
    it) and the baseline one (ATTNKERNELS_CPU_BASELINE=1)."""
    results = []
    for baseline in ("0", "1"):
        out = tmp_path / f"baseline{baseline}.pt"
        # the attnkernels this test imported, not a source tree in the working directory
        package_root = os.path.dirname(os.path.dirname(attnkernels.__file__))
        env = {**os.environ, "ATTNKERNELS_CPU_BASELINE": baseline, "PYTHONPATH": package_root}
        subprocess.run([sys.executable, "-c", script, str(out)], env=env, cwd=tmp_path,
                       check=True)
        results.append(torch.load(out))
    assert len(results[0]) == len(results[1])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def assert_flavour_matches_reference(fused, backend, dtype, fmt, shape, device, why_nudged=None):
    """A family matrix case: ``fused`` on ``backend`` against its reference twin
    (assert_module_matches_reference), x in FORMATS[fmt]."""
    fused.backend = backend
    assert_module_matches_reference(fused, reference_twin, dtype, FORMATS[fmt], shape, device,
                                    why_nudged=why_nudged)


def flavour_matrix_test(flavours, shapes, dtypes=MODULE_DTYPES):
    """A family's test_matches_reference: every flavour (name -> C -> fused
    module) x dtype x format x shape x backend against its float64 reference."""
    @pytest.mark.parametrize("backend,device,flavour,dtype,fmt,shape",
                             list(matrix_cases(flavours, dtypes, FORMATS, shapes)))
    def test_matches_reference(backend, device, flavour, dtype, fmt, shape):
        fused = flavours[flavour](shape[1]).to(device)
        assert_flavour_matches_reference(fused, backend, dtype, fmt, shape, device)

    return test_matches_reference


def zero_size_test(make, shapes=((0, 8, 4, 4), (2, 8, 0, 3))):
    """A family's test_zero_size: ``make(8)`` on every backend meets an empty
    batch and an empty plane as its upstream class does (assert_empty_like_upstream)."""
    @pytest.mark.parametrize("backend,device", BACKENDS)
    @pytest.mark.parametrize("shape", shapes)
    def test_zero_size(backend, device, shape):
        m = make(8).to(device)
        m.backend = backend
        assert_empty_like_upstream(m, shape, device)

    return test_zero_size


def matrix_cases(flavours, dtypes, formats, shapes):
    """pytest params (backend, device, flavour, dtype, fmt, shape) over every
    backend this machine runs; the Triton interpreter gets a subset (it is slow
    and has no bf16 arithmetic)."""
    for backend, device in fused_backends():
        for flavour in flavours:
            for dtype in dtypes:
                for fmt in formats:
                    for shape in shapes:
                        if backend == "triton" and device == "cpu":
                            if dtype == torch.bfloat16 or shape[1] == 32:
                                continue
                        yield pytest.param(backend, device, flavour, dtype, fmt, shape,
                                           id=f"{backend}-{flavour}-{str(dtype)[6:]}-{fmt}-"
                                              + "x".join(map(str, shape)))


def reference_twin(fused):
    """The upstream class (from its family's reference.py) of a fused module,
    with the fused module's submodules, weights and mode: it runs the upstream forward."""
    twin = fused.reference_module()
    family = type(fused).__module__.rsplit(".", 1)[0]  # attnkernels.<family>
    assert type(twin).__module__ == family + ".reference"
    return twin


def assert_float_module_matches_twin(fused, twin, shape, device):
    """``fused`` (float32) against ``twin`` (its reference, float64) on one
    forward and backward: output, every gradient, and every buffer afterwards
    (BatchNorm's running statistics and num_batches_tracked), to float32 rounding."""
    oracle = twin.double()
    x = torch.randn(shape, device=device, dtype=torch.float64)
    dy = torch.randn_like(x)
    y_o, dx_o, dw_o = run_module(oracle, x, dy)
    y_f, dx_f, dw_f = run_module(fused, x.float(), dy.float())
    torch.testing.assert_close(y_f.double(), y_o, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx_f.double(), dx_o, rtol=1e-4, atol=1e-5)
    for name in dw_o:
        torch.testing.assert_close(dw_f[name].double(), dw_o[name], rtol=1e-4, atol=1e-5, msg=name)
    buffers_o = dict(oracle.named_buffers())
    for name, buf in fused.named_buffers():
        torch.testing.assert_close(buf.double(), buffers_o[name].double(), rtol=1e-6, atol=1e-7,
                                   msg=name)


def converted_zoo(batch: int = 2):
    """(original, converted, x): bench.networks.AttentionZoo (every family) with
    its BatchNorm statistics from x, and a converted copy, whose report must
    say all its attention modules (``attention_modules``) were converted and none left alone."""
    import copy

    from bench.networks import AttentionZoo, make_attention_matter

    torch.manual_seed(0)
    x = torch.randn(batch, 3, 24, 20)
    model = make_attention_matter(AttentionZoo(), x)
    converted, report = attnkernels.convert(copy.deepcopy(model))
    assert len(report.converted) == model.attention_modules and not report.left_alone, str(report)
    return model, converted, x


def native_devices():
    """Devices whose native (C++) composite forwards this machine can run."""
    avail = attnkernels.available_backends()
    return [d for d, name in (("cpu", "cpu"), ("cuda", "cuda")) if avail[name] is None]


def assert_native_composite_is_python_twin(family, args, monkeypatch):
    """The native composite forward (C++, ``family.functional.forward_op("native")``)
    against its Python twin (the body of the Triton composite in ``family.triton``)
    run on the same native passes: every output bitwise equal, as csrc/composite
    promises (same ATen ops in the same order). family: the package, e.g. attnkernels.cbam."""
    import importlib

    triton_module = importlib.import_module(family.__name__ + ".triton")
    python_op = getattr(triton_module, f"{family.FAMILY.name}_forward_triton")
    native = family.op.passes("native")
    monkeypatch.setattr(family.op, "passes", lambda backend: native)
    with torch.no_grad():
        got = family.functional.forward_op("native")(*args)
        want = python_op._init_fn(*args)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert (g.dtype, g.shape) == (w.dtype, w.shape), (i, g.dtype, w.dtype, g.shape, w.shape)
        assert torch.equal(g, w), f"output {i} differs"


def assert_save_0_drops_only_backward_tensors(op, tensors, config, eps, backward_only):
    """A composite forward op whose config ends in ``save``: with save=0 the
    outputs at ``backward_only`` come back empty, every other output bitwise
    as with save=1; under autograd (a tensor requiring grad) save=0 is refused."""
    full = op(*tensors, [*config, 1], eps)
    lean = op(*tensors, [*config, 0], eps)
    for i, (f, g) in enumerate(zip(full, lean)):
        if i in backward_only:
            assert g.numel() == 0, i
        else:
            assert torch.equal(f, g), f"output {i} differs"
    tensors[1].requires_grad_()
    try:
        with pytest.raises(RuntimeError, match="save=0"):
            op(*tensors, [*config, 0], eps)
    finally:
        tensors[1].requires_grad_(False)


def assert_functional_matches_reference(functional, x, backend):
    """y and dx of ``functional(x, backend=backend)`` against backend="reference",
    to x's dtype's rounding (float64 or float32)."""
    dy = torch.randn_like(x)
    runs = []
    for b in (backend, "reference"):
        xx = x.clone().requires_grad_()
        y = functional(xx, backend=b)
        y.backward(dy)
        runs.append((y.detach(), xx.grad))
    tol = dict(rtol=1e-10, atol=1e-12) if x.dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for got, want in zip(*runs):
        torch.testing.assert_close(got, want, **tol)


def assert_saves_only_where_autograd_records(functional_module, module, x, grad, monkeypatch):
    """The save entry (config[-1]) that ``module``'s functional passes to the
    op of its ``functional_module.forward_op`` is 1 exactly where autograd
    records the op: one forward with grad mode ``grad`` (the module's
    parameters require grad), then one under no_grad with x requiring grad
    (no_grad wins)."""
    flags = []
    forward_op = functional_module.forward_op

    def spy(name):
        op = forward_op(name)
        return lambda *a: flags.append(a[-2][-1]) or op(*a)

    monkeypatch.setattr(functional_module, "forward_op", spy)
    with torch.set_grad_enabled(grad):
        module(x)
    with torch.no_grad():
        module(x.detach().requires_grad_())
    assert flags == [int(grad), 0]


def assert_reference_under_auto_and_raises_when_explicit(module, x, match):
    """A configuration with no fused kernel: under backend auto the module
    gives its reference twin's output; an explicit fused backend raises,
    saying why (``match``)."""
    torch.testing.assert_close(module(x), reference_twin(module)(x))
    if HAS_CPU:
        module.backend = "cpu"
        with pytest.raises(RuntimeError, match=match):
            module(x)


DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


def laid_out(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x (values unchanged) in the given memory layout; the last three are not dense."""
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # every other column of a wider tensor
        wide = x.new_zeros(*x.shape[:3], 2 * x.shape[3])
        wide[..., ::2] = x
        return wide[..., ::2]
    if layout == "transposed":  # an (N, C, W, H) tensor transposed
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "offset":  # dense, but starting one element into its storage
        flat = x.new_zeros(x.numel() + 1)
        flat[1:] = x.reshape(-1)
        return flat[1:].view(x.shape)
    return x.contiguous()


def _dense(x: torch.Tensor) -> bool:
    return x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)


def family_of(flavour: str) -> str:
    """The family of a flavours.FLAVOURS name ("<family>_<name>")."""
    return flavour.split("_")[0]


def batch_norm_over_few_values(module, shape, train, family=None) -> bool:
    """A training BatchNorm that normalises at most four values per channel: a
    spatial gate's (CBAM, Triplet: N * H * W of them) or Coordinate Attention's
    strips of a 1x1 image (N), both at most N * H * W, or what the family's
    BATCH_NORM_VALUES says (tests/flavours.py). What reaches the layers
    before it is amplified by 1/sigma of a handful of values: fused and eager
    differ by their rounding times that (seen: 1e-4 of the scale in float32 at
    3x256x1x1), and no budget tells a bug from it."""
    from flavours import BATCH_NORM_VALUES

    if not train or not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules()):
        return False
    values = BATCH_NORM_VALUES.get(family)
    return (values(module, shape) if values else shape[0] * shape[2] * shape[3]) <= 4


def _ill_conditioned(eager_nudged_and_oracle):
    """Why a random case is ill-conditioned, or None: eager itself off the float64
    oracle by more than half the cap somewhere (the precision cannot resolve the
    case), or one ulp of input moving eager more than 4x its own error plus the
    floor (a BatchNorm over a few values, a near-tie). Fused must then be as good
    as eager, or as one ulp of input moves it."""
    for name, (e, n, o) in eager_nudged_and_oracle.items():
        if not o.numel():
            continue
        e, n, o = e.double(), n.double(), o.double()
        scale = max(o.abs().max().item(), 1.0)
        off, moved = (e - o).abs().max().item(), (n - e).abs().max().item()
        if off > CAP[eager_nudged_and_oracle[name][0].dtype] * scale / 2:
            return f"eager is {off / scale:.2g} of the scale off float64 in {name}"
        if moved > 4 * (off + EPS[eager_nudged_and_oracle[name][0].dtype] * scale):
            return f"one ulp of input moves eager's {name} by {moved:.2g} (its error: {off:.2g})"
    return None


def check_flavour_case(backend, device, flavour, shape, dt, layout, train, explicit, seed,
                       compiler=None, ties=False, grad=True) -> bool:
    """One case of a flavours.FLAVOURS module on ``backend`` (chosen explicitly, or by "auto"
    when the case is not explicit and the backend is auto's pick for ``device``):
    the forward, the input gradient, every parameter gradient and BatchNorm's
    running statistics against the float64 oracle and eager. False when upstream
    itself refuses the case (BatchNorm over one value), or when a training
    BatchNorm sees a few values (batch_norm_over_few_values; tests/test_coord.py
    names such a shape); or a
    half-precision case that the pure-PyTorch fallback serves (non-dense input).
    ``compiler``: the fused module runs under torch.compile(fullgraph=True) with
    this backend ("inductor", ...), eager and the oracle as they are.
    ``ties``: x takes five values (-1, -0.5, 0, 0.5, 1), exact in every dtype,
    so that every max-pool meets ties (and whole tied rows) and every backward
    must route them as upstream does; ``ties="near"``: those values 3e-6 apart
    (near-ties); no nudged budget then (one ulp of input would only break the
    ties the case is made of). ``grad=False``: the forward alone, under
    torch.no_grad (where autograd records nothing: another path under
    torch.compile), y and the BatchNorm statistics."""
    # flavours imports the family test files, which import this one
    from flavours import FLAVOURS, LIBRARY_LAYERS

    if dt in (torch.float16, torch.bfloat16) and family_of(flavour) in LIBRARY_LAYERS:
        # the module's library layers round its gradients in half precision
        # where sums cancel (seen: 10 bf16 ulps on a conv bias, eager luckily
        # at 1): no budget tells a bug; its test file holds the fused passes
        # alone to the half-precision budgets (e.g. test_sk's functional matrix)
        return False
    torch.manual_seed(seed)
    fused = FLAVOURS[flavour](shape[1])
    with torch.no_grad():  # gates away from 0.5, as in the matrix tests
        for p in fused.parameters():
            p.mul_(3.0)
    fused = fused.to(device=device, dtype=dt).train(train)
    if batch_norm_over_few_values(fused, shape, train, family_of(flavour)):
        return False
    oracle = fused.reference_module().double()
    oracle_elsewhere = copy.deepcopy(oracle)  # its own BatchNorm statistics
    eager = fused.reference_module()
    if ties:
        x = (torch.randint(-2, 3, shape) * 0.5).double()
        if ties == "near":  # apart by about 25 float32 ulps: resolved, but barely
            x = (x + 3e-6 * torch.randn(shape, dtype=torch.float64)).to(dt).double()
        x = x.to(device)
    else:
        x = torch.randn(shape, dtype=torch.float64).to(dt).double().to(device)
    dy = torch.randn(shape, dtype=torch.float64).to(dt).double().to(device) if grad else None
    try:
        y_o, dx_o, dw_o = run_module(oracle, x, dy)
    except (ValueError, RuntimeError):  # upstream itself refuses (BatchNorm, 1 value)
        return False
    x_in = laid_out(x.to(dt), layout)
    dy_in = laid_out(dy.to(dt), layout) if grad else None
    # a module with library layers hands x to them first (they take any layout)
    if explicit and not _dense(x_in) and family_of(flavour) not in LIBRARY_LAYERS:
        fused.backend = backend  # no hidden copy: an explicit fused backend refuses
        with pytest.raises(RuntimeError, match="neither NCHW-contiguous nor channels_last"):
            fused(x_in)
        return True
    # Not explicit: "auto", which serves CPU tensors from the C++ backend, CUDA ones
    # from CUDA C++, and non-dense ones from the reference. Triton is never auto's
    # pick, so a dense case names it.
    named = explicit or (backend == "triton" and _dense(x_in))
    fused.backend = backend if named else None
    if not _dense(x_in) and dt in (torch.float16, torch.bfloat16):
        # The pure-PyTorch fallback (attnkernels/reference functionals: matmuls on
        # strip means where upstream runs convs on pooled maps) rounds in another
        # order than upstream: a few ulps apart in half precision, no kernel of ours.
        return False
    eager_forward = None
    if compiler and family_of(flavour) in LIBRARY_LAYERS:
        # library layers run around the fused passes: compiled, they round as
        # they do in the compiled upstream module, which is then the budget
        torch._dynamo.reset()
        eager_forward = torch.compile(eager, fullgraph=True, backend=compiler)
    y_e, dx_e, dw_e = run_module(eager, x_in, dy_in, eager_forward)
    forward = None
    if compiler:
        torch._dynamo.reset()  # a fresh cache: no recompile limit reached across cases
        forward = torch.compile(fused, fullgraph=True, backend=compiler)
    y_f, dx_f, dw_f = run_module(fused, x_in, dy_in, forward)
    x_n = nudged(x_in)
    y_n, dx_n, dw_n = run_module(eager, x_n, dy_in, eager_forward)
    outputs = {"y": (y_f, y_e, y_o)}
    if grad:
        outputs.update({"dx": (dx_f, dx_e, dx_o),
                        **{k: (dw_f[k], dw_e[k], dw_o[k]) for k in dw_o if dw_o[k] is not None}})
    nudges = {"y": y_n, "dx": dx_n, **dw_n}
    elsewhere = {}
    if not ties:  # eager's error sampled at x_n too (a tie there would be no sample of rounding)
        y_no, dx_no, dw_no = run_module(oracle_elsewhere, x_n.double(), dy)
        elsewhere = {"y": (y_n, y_no), "dx": (dx_n, dx_no), **{k: (dw_n[k], dw_no[k]) for k in dw_o}}
    why = None if ties else _ill_conditioned(
        {k: (e, nudges[k], o) for k, (f, e, o) in outputs.items()})
    budget = nudges if why else {}
    for name, (f, e, o) in outputs.items():
        terms = 0.0 if name in ("y", "dx") else parameter_terms(shape)
        assert_matches_oracle(f, e, o, name, budget.get(name), why, terms, elsewhere.get(name))
    if dt in (torch.float32, torch.float64):  # BatchNorm's running statistics after the step
        buffers = dict(oracle.named_buffers())
        for name, b in fused.named_buffers():
            torch.testing.assert_close(b.double(), buffers[name].double(), rtol=1e-5, atol=1e-6,
                                       msg=name)
    return True


def flavours_digest(shape=(3, 40, 9, 7), backend="cpu", any_thread_count=False) -> str:
    """sha256 of every flavours.FLAVOURS module's forward and gradients on ``backend``,
    NCHW and channels_last, in training mode (the same seeds every call): equal
    digests are bitwise-equal results. any_thread_count: without the families
    whose modules run library layers (flavours.LIBRARY_LAYERS and
    THREAD_DEPENDENT_LAYERS: PyTorch's
    convolutions promise no bits across thread counts; such a family's test
    file checks its own ops at several)."""
    import hashlib

    from flavours import FLAVOURS, LIBRARY_LAYERS, THREAD_DEPENDENT_LAYERS

    digest = hashlib.sha256()
    for name in sorted(FLAVOURS):
        if any_thread_count and family_of(name) in {**LIBRARY_LAYERS, **THREAD_DEPENDENT_LAYERS}:
            continue
        for fmt in (torch.contiguous_format, torch.channels_last):
            torch.manual_seed(0)
            m = FLAVOURS[name](shape[1])
            m.backend = backend
            x = torch.randn(shape).to(memory_format=fmt)
            y, dx, dw = run_module(m, x, torch.randn_like(x))
            for t in (y, dx, *[g for g in dw.values() if g is not None]):
                digest.update(t.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def assert_empty_like_upstream(fused, shape, device):
    """An empty input (a zero-size batch or plane) on ``fused``'s backend: y and dx
    empty and of x's shape, and every parameter gradient and buffer afterwards
    what the upstream module (the reference twin, same input) leaves; where
    upstream refuses an empty input (a .view(N, 1, -1)), zero gradients and
    untouched buffers."""
    before = {n: b.clone() for n, b in fused.named_buffers()}
    runs = []
    for m in (fused.reference_module(), fused):
        x = torch.randn(shape, device=device, requires_grad=True)
        try:
            y = m(x)
        except RuntimeError:
            assert m is not fused
            runs.append(None)
            continue
        y.sum().backward()
        runs.append((y, x.grad, {n: p.grad for n, p in m.named_parameters()},
                     {n: b.clone() for n, b in m.named_buffers()}))
    upstream, (y, dx, grads, buffers) = runs
    assert tuple(y.shape) == tuple(shape) and tuple(dx.shape) == tuple(shape)
    if upstream is None:
        upstream = (None, None, {n: None for n in grads}, before)
    _, _, grads_r, buffers_r = upstream
    for n, g in grads_r.items():
        if g is None:
            assert grads[n] is None or not grads[n].any(), n
        else:
            torch.testing.assert_close(grads[n], g, rtol=0, atol=0, equal_nan=True, msg=n)
    for n, b in buffers_r.items():
        torch.testing.assert_close(buffers[n], b, rtol=0, atol=0, equal_nan=True, msg=n)


TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                torch.float64: "fp64", torch.int32: "i32", torch.int64: "i64", torch.int8: "i8",
                torch.uint8: "u8", torch.bool: "i1"}


def _triton_argument_type(value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + TRITON_TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"  # what the JIT makes of a Python float
    if isinstance(value, tuple):  # a tuple of pointers (Selective Kernel's branches)
        return tuple(_triton_argument_type(v) for v in value)
    raise TypeError(f"no Triton type for {type(value).__name__}")


def record_triton_launches(run) -> list:
    """Every Triton kernel launch of ``run()`` in the interpreter, in order:
    {"spec": {module, kernel, signature (argument types), constexprs},
    "ints": the integer runtime arguments by name, "grid": the launch grid}."""
    import inspect

    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    launches = []
    original = InterpretedFunction.run

    def recording(self, *args, grid, warmup, **kwargs):
        params = inspect.signature(self.fn).parameters
        bound = inspect.signature(self.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        signature, constexprs, ints = {}, {}, {}
        for name, value in bound.arguments.items():
            annotation = params[name].annotation
            if "constexpr" in str(getattr(annotation, "__name__", annotation)) or value is None:
                signature[name] = "constexpr"
                value = value.value if hasattr(value, "value") else value
                if isinstance(value, tl.dtype):  # an accumulate type (ACC=tl.float32)
                    value = {"tl.dtype": value.name}
                constexprs[name] = value
            else:
                signature[name] = _triton_argument_type(value)
                if isinstance(value, int) and not isinstance(value, bool):
                    ints[name] = value
        launches.append({"spec": {"module": self.fn.__module__, "kernel": self.fn.__name__,
                                  "signature": signature, "constexprs": constexprs},
                         "ints": ints, "grid": grid})
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording
    try:
        run()
    finally:
        InterpretedFunction.run = original
    return launches


# (backend, device) of every fused backend this machine has
BACKENDS = fused_backends()


def converted_as_itself(upstream, root):
    """``attnkernels.convert`` of a copy of ``upstream``: its own flavour's drop-in
    (a ``root`` subclass of the same class name), else the report in the failure."""
    fused, report = attnkernels.convert(copy.deepcopy(upstream))
    assert type(fused).__name__ == type(upstream).__name__, str(report)
    assert isinstance(fused, root), str(report)
    return fused


def assert_converted_matches_float64(upstream, fused, shape, dtype, fmt="nchw",
                                     why_layout_varies=None) -> None:
    """A converted module (``fused``, already in ``dtype``) against its
    original ``upstream``: output, input gradient, every parameter's gradient
    and the buffers afterwards (BatchNorm statistics), each within twice the
    original's own error in ``dtype`` of the float64 original, on an input in
    memory format ``fmt`` (a FORMATS key). ``why_layout_varies``: the reason
    the original's own error depends on its rounding path (a small network);
    the original run in the other layout then joins the budget (as
    ``eager_nudged`` does)."""
    eager = copy.deepcopy(upstream).to(dtype)
    oracle = copy.deepcopy(upstream).double()
    g = torch.Generator().manual_seed(1)
    x, dy = (torch.randn(shape, generator=g).to(memory_format=FORMATS[fmt]) for _ in range(2))
    y_o, dx_o, dw_o = run_module(oracle, x.double(), dy.double())
    y_e, dx_e, dw_e = run_module(eager, x.to(dtype), dy.to(dtype))
    y_f, dx_f, dw_f = run_module(fused, x.to(dtype), dy.to(dtype))
    y_n = dx_n = None
    dw_n = {}
    if why_layout_varies:
        other = FORMATS["nchw" if fmt == "channels_last" else "channels_last"]
        y_n, dx_n, dw_n = run_module(copy.deepcopy(upstream).to(dtype),
                                     x.to(dtype).to(memory_format=other),
                                     dy.to(dtype).to(memory_format=other))
    assert_matches_oracle(y_f, y_e, y_o, "y", y_n, why_layout_varies)
    assert_matches_oracle(dx_f, dx_e, dx_o, "dx", dx_n, why_layout_varies)
    for name, g_o in dw_o.items():
        assert_matches_oracle(dw_f[name], dw_e[name], g_o, name, dw_n.get(name),
                              why_layout_varies if name in dw_n else None,
                              terms=parameter_terms(shape))
    for (name, b_f), b_o, b_e in zip(fused.named_buffers(), oracle.buffers(), eager.buffers()):
        if b_f.is_floating_point():
            assert_matches_oracle(b_f, b_e, b_o, name)
        else:
            assert torch.equal(b_f, b_e), name
    assert y_f.is_contiguous(memory_format=FORMATS[fmt])


def assert_compiled_matches_eager_and_float64(upstream, fused, shape) -> None:
    """torch.compile (inductor, fullgraph) of a converted float32 module
    (``fused``, a copy of ``upstream`` converted): output, input and parameter
    gradients against the same module in eager mode and the float64 original."""
    x, dy = torch.randn(shape), torch.randn(shape)
    y_o, dx_o, dw_o = run_module(copy.deepcopy(upstream).double(), x.double(), dy.double())
    eager = copy.deepcopy(fused)
    torch._dynamo.reset()
    y_c, dx_c, dw_c = run_module(fused, x, dy, torch.compile(fused, fullgraph=True))
    y_e, dx_e, dw_e = run_module(eager, x, dy)
    assert_matches_oracle(y_c, y_e, y_o, "y")
    assert_matches_oracle(dx_c, dx_e, dx_o, "dx")
    for name, g_o in dw_o.items():
        assert_matches_oracle(dw_c[name], dw_e[name], g_o, name, terms=parameter_terms(shape))
