"""Property-based fuzzing against the float64 reference: a random module flavour of
every family, shape (1s and primes included), dtype, memory format or strides
(sliced, transposed, storage offset), train or eval, and backend; the forward
and every gradient against the oracle, by the same rule as the matrix tests.

Every fused backend this machine runs is fuzzed: the compiled ones (CPU, and
CUDA and Triton on a GPU) with the full example count, the Triton interpreter
(Triton without a GPU) with a few examples, since it is some 100x slower.

Fixed seed (derandomize) and a bounded example count, so CI runs the same cases
every time; ATTNKERNELS_FUZZ_EXAMPLES (and ATTNKERNELS_FUZZ_INTERPRETER_EXAMPLES)
raise the counts for a longer local hunt. Every failure found becomes an
@example below (the regression corpus)."""
import copy
import os

import pytest
import torch

import attnkernels
from attnkernels import nn as fnn

from utils import assert_matches_oracle, fused_backends, nudged, run_module

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

HAS_CPU = attnkernels.available_backends()["cpu"] is None
EXAMPLES = int(os.environ.get("ATTNKERNELS_FUZZ_EXAMPLES", "60"))
INTERPRETER_EXAMPLES = int(os.environ.get("ATTNKERNELS_FUZZ_INTERPRETER_EXAMPLES", "40"))
# (backend, device) pairs: compiled, and the Triton interpreter (Triton on a CPU tensor)
COMPILED = [p for p in fused_backends() if not (p[0] == "triton" and p[1] == "cpu")]
INTERPRETED = [p for p in fused_backends() if p[0] == "triton" and p[1] == "cpu"]

# family flavour -> C -> a fused module (any C >= 1 works for each)
FLAVOURS = {
    "se_timm": lambda C: fnn.SEModule(C, rd_ratio=0.5, rd_divisor=1),
    "se_seed": lambda C: fnn.SELayer(C, reduction=1),
    "se_torchvision": lambda C: fnn.SqueezeExcitation(C, max(1, C // 2)),
    "eca_timm": lambda C: fnn.EcaModule(C),
    "eca_official": lambda C: fnn.ECALayer(C, 3),
    "eca_ceca": lambda C: fnn.CecaModule(C),
    "cbam_timm": lambda C: fnn.CbamModule(C, rd_channels=max(1, C // 2)),
    "cbam_official": lambda C: fnn.OfficialCBAM(C, reduction_ratio=1),
    "cbam_seed": lambda C: fnn.CBAM(C, ratio=1, kernel_size=3),
    "cbam_light": lambda C: fnn.LightCbamModule(C, rd_channels=max(1, C // 2)),
    "cbam_ultralytics": lambda C: fnn.UltralyticsCBAM(C, 3),
    "coord_official": lambda C: fnn.CoordAtt(C, C, reduction=1),
    "coord_timm": lambda C: fnn.CoordAttn(C, rd_ratio=0.5, rd_divisor=1),
    "triplet_official": lambda C: fnn.TripletAttention(),
    "triplet_no_spatial_k3": lambda C: fnn.TripletAttention(no_spatial=True, kernel_size=3),
    "triplet_legacy": lambda C: fnn.LegacyTripletAttention(C),
}
DIMS = [1, 2, 3, 5, 7, 11, 13]
LAYOUTS = ["nchw", "channels_last", "sliced", "transposed", "offset"]
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


def _laid_out(x: torch.Tensor, layout: str) -> torch.Tensor:
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


def _strategies(dtypes):
    return dict(flavour=st.sampled_from(sorted(FLAVOURS)), n=st.sampled_from([1, 2, 3]),
                c=st.sampled_from(DIMS + [16, 17, 32]), h=st.sampled_from(DIMS),
                w=st.sampled_from(DIMS), dtype=st.sampled_from(dtypes),
                layout=st.sampled_from(LAYOUTS), train=st.booleans(),
                explicit=st.booleans(), seed=st.integers(0, 2 ** 16))


@pytest.mark.parametrize("backend,device", COMPILED, ids=[f"{b}-{d}" for b, d in COMPILED])
@hypothesis.settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(**_strategies(sorted(DTYPES)))
# The regression corpus: every failure the fuzzer found, and what it was.
# BatchNorm over two values per channel (CoordAtt, 1x3x1x1, training): the
# rule's eager budget was luckily small; one ulp of input moves eager 3x more.
@hypothesis.example(flavour="coord_official", n=1, c=3, h=1, w=1, dtype="float32",
                    layout="nchw", train=True, explicit=False, seed=1)
def test_fused_matches_reference(backend, device, flavour, n, c, h, w, dtype, layout, train,
                                 explicit, seed):
    _check(backend, device, flavour, n, c, h, w, dtype, layout, train, explicit, seed)


# the interpreter has no bfloat16 arithmetic
@pytest.mark.parametrize("backend,device", INTERPRETED, ids=[f"{b}-{d}" for b, d in INTERPRETED])
@hypothesis.settings(max_examples=INTERPRETER_EXAMPLES, derandomize=True, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(**_strategies(["float16", "float32", "float64"]))
def test_triton_interpreter_matches_reference(backend, device, flavour, n, c, h, w, dtype, layout,
                                              train, explicit, seed):
    _check(backend, device, flavour, n, c, h, w, dtype, layout, train, explicit, seed)


def _check(backend, device, flavour, n, c, h, w, dtype, layout, train, explicit, seed):
    """One fuzz case: the module on ``backend`` (chosen explicitly, or by "auto"
    when the case is not explicit and the backend is auto's pick for ``device``)
    against the float64 oracle and eager."""
    torch.manual_seed(seed)
    dt = DTYPES[dtype]
    fused = FLAVOURS[flavour](c)
    with torch.no_grad():  # gates away from 0.5, as in the matrix tests
        for p in fused.parameters():
            p.mul_(3.0)
    fused = fused.to(device=device, dtype=dt).train(train)
    oracle = fused.reference_module().double()
    eager = fused.reference_module()
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(dt).double().to(device)
    dy = torch.randn(n, c, h, w, dtype=torch.float64).to(dt).double().to(device)
    try:
        y_o, dx_o, dw_o = run_module(oracle, x, dy)
    except (ValueError, RuntimeError):  # upstream itself refuses (BatchNorm, 1 value)
        hypothesis.assume(False)
    x_in, dy_in = _laid_out(x.to(dt), layout), _laid_out(dy.to(dt), layout)
    if explicit and not _dense(x_in):
        fused.backend = backend  # no hidden copy: an explicit fused backend refuses
        with pytest.raises(RuntimeError, match="neither NCHW-contiguous nor channels_last"):
            fused(x_in)
        return
    # Not explicit: "auto", which serves CPU tensors from the C++ backend, CUDA ones
    # from CUDA C++, and non-dense ones from the reference. Triton is never auto's
    # pick, so a dense case names it.
    named = explicit or (backend == "triton" and _dense(x_in))
    fused.backend = backend if named else None
    y_e, dx_e, dw_e = run_module(eager, x_in, dy_in)
    y_n, dx_n, dw_n = run_module(eager, nudged(x_in), dy_in)
    y_f, dx_f, dw_f = run_module(fused, x_in, dy_in)
    assert_matches_oracle(y_f, y_e, y_o, "y", y_n)
    assert_matches_oracle(dx_f, dx_e, dx_o, "dx", dx_n)
    for name in dw_o:
        if dw_o[name] is not None:
            assert_matches_oracle(dw_f[name], dw_e[name], dw_o[name], name, dw_n[name])
    if dt in (torch.float32, torch.float64):  # BatchNorm's running statistics after the step
        buffers = dict(oracle.named_buffers())
        for name, b in fused.named_buffers():
            torch.testing.assert_close(b.double(), buffers[name].double(), rtol=1e-5, atol=1e-6,
                                       msg=name)


@pytest.mark.skipif(not HAS_CPU, reason="the C++ CPU extension is not built")
def test_concurrent_calls_from_python_threads_match_serial():
    """Modules called from several Python threads at once (each its own module and
    input) give what they give one at a time."""
    import threading

    makers = [FLAVOURS[f] for f in ("se_timm", "eca_timm", "cbam_official", "coord_official",
                                    "triplet_official")]
    jobs = []
    for i, make in enumerate(makers * 2):
        torch.manual_seed(i)
        m = make(24).eval()
        m.backend = "cpu"
        x = torch.randn(2, 24, 9, 7)
        jobs.append((m, x, torch.randn_like(x)))
    serial = [run_module(m, x, dy) for m, x, dy in jobs]
    results = [None] * len(jobs)

    def work(i):
        m, x, dy = jobs[i]
        results[i] = run_module(copy.deepcopy(m), x, dy)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (y, dx, dw), (y0, dx0, dw0) in zip(results, serial):
        assert torch.equal(y, y0) and torch.equal(dx, dx0)
        for k in dw0:
            assert torch.equal(dw[k], dw0[k]), k
