"""Backend selection and bad input."""
import pytest
import torch

import attnkernels
from attnkernels import functional as F
from attnkernels import nn as fnn


def _args(C=8, R=2):
    return torch.randn(2, C, 4, 4), torch.randn(R, C), torch.randn(R), torch.randn(C, R), torch.randn(C)


def test_available_backends_lists_every_backend_with_reason_or_none():
    avail = attnkernels.available_backends()
    assert set(avail) == {"cuda", "triton", "cpu", "reference"}
    assert avail["reference"] is None
    for name, why in avail.items():
        assert why is None or (isinstance(why, str) and why)


def test_explicit_backend_that_cannot_serve_raises_with_reasons():
    x, w1, b1, w2, b2 = _args()
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot serve"):
        F.squeeze_excite(x, w1, b1, w2, b2, backend="cuda")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        with attnkernels.use_backend("fastest"):
            pass


def test_a_module_refuses_an_unknown_backend_when_it_is_set():
    m = fnn.SEModule(16)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        m.backend = "gpu"
    m.backend = "cpu"
    m.backend = None  # back to use_backend() / auto
    assert m.backend is None


@pytest.mark.parametrize("make", [lambda: fnn.SEModule(256), lambda: fnn.CbamModule(256),
                                  lambda: fnn.CoordAttn(256)])
def test_a_channel_mismatch_names_the_input(make):
    with pytest.raises(ValueError, match="x has 128 channels, but the module's gate network "
                                         "expects 256"):
        make()(torch.randn(2, 128, 5, 5))


def test_use_backend_context_and_auto_agree_with_reference():
    x, w1, b1, w2, b2 = _args()
    with attnkernels.use_backend("reference"):
        y_ref = F.squeeze_excite(x, w1, b1, w2, b2)
    y_auto = F.squeeze_excite(x, w1, b1, w2, b2, backend="auto")
    torch.testing.assert_close(y_auto, y_ref)


def test_non_dense_input_goes_to_reference_under_auto_and_raises_when_explicit():
    x, w1, b1, w2, b2 = _args()
    xs = torch.randn(2, 16, 4, 4)[:, ::2]
    y = F.squeeze_excite(xs, w1, b1, w2, b2)
    torch.testing.assert_close(y, attnkernels.reference.squeeze_excite(xs, w1, b1, w2, b2))
    if attnkernels.available_backends()["cpu"] is None:
        with pytest.raises(RuntimeError, match="neither NCHW-contiguous nor channels_last"):
            F.squeeze_excite(xs, w1, b1, w2, b2, backend="cpu")


def test_bn_training_runs_reference_under_auto_and_raises_when_explicit():
    m = fnn.SEModule(16, norm_layer=torch.nn.BatchNorm2d).train()
    x = torch.randn(4, 16, 3, 3)
    ref = m.reference_module()
    y = m(x)  # auto: the reference forward, batch statistics and all
    torch.testing.assert_close(y, ref(x), rtol=0, atol=0)
    torch.testing.assert_close(m.bn.running_mean, ref.bn.running_mean, rtol=0, atol=0)
    if attnkernels.available_backends()["cpu"] is None:
        m.backend = "cpu"
        with pytest.raises(RuntimeError, match="BatchNorm2d in training mode"):
            m(x)


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("mutate,error,match", [
    (lambda a: (a[0][0],) + a[1:], ValueError, "x must be a 4-D"),
    (lambda a: (a[0].to(torch.int32),) + a[1:], TypeError, "x must be a floating-point"),
    (lambda a: (a[0].to(torch.complex64),) + a[1:], TypeError, "x must be a floating-point"),
    (lambda a: (torch.randn(2, 9, 4, 4),) + a[1:], ValueError, "w1 must have shape"),
    (lambda a: a[:3] + (torch.randn(8, 3),) + a[4:], ValueError, "w2 must have shape"),
    (lambda a: a[:2] + (torch.randn(3),) + a[3:], ValueError, "b1 must have shape"),
    (lambda a: a[:4] + (torch.randn(8, 1),), ValueError, "b2 must have shape"),
    (lambda a: a[:1] + (a[1].to(torch.int64),) + a[2:], TypeError, "w1 must be a floating-point"),
    (lambda a: a[:1] + (a[1].to("meta"),) + a[2:], ValueError, "w1 is on meta but x is on cpu"),
])
def test_bad_input_names_the_argument(backend, mutate, error, match):
    args = mutate(_args())
    with pytest.raises(error, match=match):
        F.squeeze_excite(*args, backend=backend)


def test_one_layer_gate_rules():
    x = torch.randn(2, 8, 4, 4)
    with pytest.raises(ValueError, match="one-layer gate"):
        F.squeeze_excite(x, torch.randn(2, 8))
    with pytest.raises(ValueError, match="act must be 'identity'"):
        F.squeeze_excite(x, torch.randn(8, 8), act="relu")


def test_unsupported_activation_is_reported():
    m = fnn.SqueezeExcitation(8, 2, activation=torch.nn.GELU)
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(m(x), m.reference_module()(x), rtol=0, atol=0)  # auto: reference
    assert isinstance(m.gate_spec(), str) and "GELU" in m.gate_spec()


@pytest.mark.skipif(attnkernels.available_backends()["cpu"] is not None, reason="no C++ extension")
def test_compiled_op_checks_its_arguments():
    x, w1, b1, w2, b2 = _args()
    with pytest.raises(RuntimeError, match="w2 must have shape"):
        torch.ops.attnkernels.se_forward(x, w1, b1, torch.randn(3, 3), b2, 0, 1, 0)
    with pytest.raises(RuntimeError, match="channels_last"):
        torch.ops.attnkernels.se_forward(torch.randn(2, 16, 4, 4)[:, ::2], w1, b1, w2, b2, 0, 1, 0)


def test_flavour_factory():
    assert isinstance(fnn.SqueezeExcite(32), fnn.SEModule)
    assert isinstance(fnn.SqueezeExcite(32, 4, flavour="seed"), fnn.SELayer)
    with pytest.raises(ValueError, match="unknown SE flavour"):
        fnn.SqueezeExcite(32, flavour="nope")


@pytest.mark.parametrize("make", [
    lambda: fnn.OfficialCBAM(16, 4), lambda: fnn.CbamModule(16), lambda: fnn.CoordAttn(16),
    lambda: fnn.TripletAttention(), lambda: fnn.SEModule(16, norm_layer=torch.nn.BatchNorm2d)],
    ids=["cbam_official", "cbam_timm", "coord_timm", "triplet", "se_timm_bn"])
def test_sync_batch_norm_runs_the_reference_forward(make):
    """After convert_sync_batchnorm a gate's norm layer synchronises statistics
    across processes, which no fused kernel does: auto runs the reference
    forward (SyncBatchNorm's own), an explicit fused backend raises."""
    m = torch.nn.SyncBatchNorm.convert_sync_batchnorm(make()).eval()
    spec = m.gate_spec()
    assert isinstance(spec, str) and ("SyncBatchNorm" in spec or "not all BatchNorm2d" in spec), spec
    x = torch.randn(2, 16, 5, 6)
    torch.testing.assert_close(m(x), m.reference_module()(x), rtol=0, atol=0)
    m.backend = "cpu"
    with pytest.raises(RuntimeError, match="cannot serve"):
        m(x)
