"""ultralytics models as their users build them (from YAML, offline), through
convert and revert: YOLOv8n with a CBAM layer (bench/data/yolov8n-cbam.yaml),
YOLOv10n (PSA), YOLO11n (C2PSA) and YOLO12n (A2C2f's area attention). Every
attention module converts; the converted model's outputs (eval) and every
gradient (train) match the original's in float64, and in float32 against the
float64 original; revert gives the original classes and bits back; a converted
model pickles and loads where attnkernels is installed; ONNX export of a
converted model runs as the original. ultralytics is AGPL-3.0: a test
dependency only, never imported by attnkernels."""
import copy
import os
import tempfile

import pytest
import torch

import attnkernels
from utils import WHOLE_NETWORK, assert_matches_oracle, nudged, unsettle_batch_norms

# offline (its import would probe the network), its settings file in a scratch
# folder rather than the user's home
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="attnkernels-ultralytics-"))
pytest.importorskip("ultralytics")
from bench.networks import yolo  # noqa: E402  (builds from the YAML; CBAM registered)

# model -> the attention classes convert must replace, and how many
MODELS = {
    "yolov8n_cbam": {("CBAM", "UltralyticsCBAM"): 1},
    "yolov10n": {("Attention", "UltralyticsAttention"): 1},
    "yolo11n": {("Attention", "UltralyticsAttention"): 1},
    "yolo12n": {("AAttn", "UltralyticsAreaAttention"): 8},
}
SIZE = 64  # the smallest input every stride (32) and YOLO12's areas (4 at P4) take


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return unsettle_batch_norms(yolo(name))


def _converted(model: torch.nn.Module, name: str) -> torch.nn.Module:
    converted, report = attnkernels.convert(copy.deepcopy(model))
    swapped = {}
    for _, old, new in report.converted:
        swapped[(old, new)] = swapped.get((old, new), 0) + 1
    assert swapped == MODELS[name] and not report.left_alone, str(report)
    return converted


def _tensors(out) -> list:
    """The tensors of a model's output, however nested (tuples, lists, dicts), in
    order (an ONNX graph's outputs come in this order)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    return [t for o in out for t in _tensors(o)]


def _input(dtype=torch.float64):
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(dtype)


def _eval_outputs(model, x):
    with torch.no_grad():
        return _tensors(model.eval()(x))


def _train_step(model, x):
    """(outputs, {parameter: gradient}) of one training-mode forward and a
    backward of fixed random weights of every output."""
    model.train().zero_grad(set_to_none=True)
    outs = _tensors(model(x))
    g = torch.Generator().manual_seed(2)
    sum((o * torch.randn(o.shape, generator=g).to(o)).sum() for o in outs).backward()
    return outs, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _set_path(model, path):
    for m in model.modules():
        if isinstance(m, attnkernels.nn.DotProductAttention):
            m.path = path


@pytest.mark.parametrize("name,path", [(n, None) for n in MODELS] + [
    (n, "sdpa") for n in MODELS if n != "yolov8n_cbam"])
def test_converted_model_matches_in_float64(name, path):
    """Eval outputs and train-mode outputs and gradients, float64 both sides:
    within what one ulp moved on the input moves the original (a whole network).
    The attention modules on the device's path (here the CPU's: explicit) and
    on SDPA (a GPU's), which the CPU runs too."""
    model = _model(name).double()
    converted = _converted(model, name)
    _set_path(converted, path)
    x = _input()
    for got, want, moved in zip(_eval_outputs(converted, x), _eval_outputs(model, x),
                                _eval_outputs(model, nudged(x))):
        assert_matches_oracle(got, want, want, "eval output", moved, WHOLE_NETWORK)
    outs_f, grads_f = _train_step(converted, x)
    outs_e, grads_e = _train_step(model, x)
    outs_n, grads_n = _train_step(copy.deepcopy(model), nudged(x))
    for got, want, moved in zip(outs_f, outs_e, outs_n):
        assert_matches_oracle(got, want, want, "train output", moved, WHOLE_NETWORK)
    assert grads_f.keys() == grads_e.keys() and len(grads_e) > 100
    for k in grads_e:
        assert_matches_oracle(grads_f[k], grads_e[k], grads_e[k], k, grads_n[k], WHOLE_NETWORK)


@pytest.mark.parametrize("name", list(MODELS))
def test_converted_model_in_float32_against_float64(name):
    """What users run: the converted model in float32 against the float64
    original, within the float32 original's own error (eval outputs)."""
    model = _model(name)
    converted = _converted(model, name)
    oracle = copy.deepcopy(model).double()
    x = _input(torch.float32)
    for got, want, exact, moved in zip(_eval_outputs(converted, x), _eval_outputs(model, x),
                                       _eval_outputs(oracle, x.double()),
                                       _eval_outputs(model, nudged(x))):
        assert_matches_oracle(got, want, exact, "eval output", moved, WHOLE_NETWORK)


@pytest.mark.parametrize("name", list(MODELS))
def test_revert_round_trip_is_bitwise(name, tmp_path):
    """revert(convert(model)): the original classes, the same state_dict, the
    same bits; the converted model also round-trips through torch.save."""
    model = _model(name).eval()
    x = _input(torch.float32)
    want = _eval_outputs(model, x)
    converted = _converted(model, name)
    path = tmp_path / "converted.pt"
    torch.save(converted, path)
    loaded = torch.load(path, weights_only=False)  # attnkernels installed: its classes load
    for a, b in zip(_eval_outputs(loaded, x), _eval_outputs(converted, x)):
        assert torch.equal(a, b)
    reverted, report = attnkernels.revert(converted)
    assert len(report.converted) == sum(MODELS[name].values()) and not report.left_alone
    assert [type(m) for m in reverted.modules()] == [type(m) for m in model.modules()]
    assert reverted.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(reverted.state_dict()[k], v), k
    for a, b in zip(_eval_outputs(reverted, x), want):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov8n_cbam", "yolo12n"])
def test_onnx_export_of_the_converted_model_runs_as_the_original(name, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _model(name).eval()
    converted = _converted(model, name)
    x = _input(torch.float32)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(converted, (x,), str(path), dynamo=True, input_names=["x"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})
    want = _eval_outputs(model, x)
    oracle = _eval_outputs(copy.deepcopy(model).double(), x.double())
    moved = _eval_outputs(model, nudged(x))
    assert len(got) == len(want)
    for g, w, o, n in zip(got, want, oracle, moved):
        assert_matches_oracle(torch.from_numpy(g), w, o, "onnxruntime", n, WHOLE_NETWORK)


def test_spatial_attention_alone_converts():
    """ultralytics' SpatialAttention without a channel gate converts (CBAM's
    kernels without the channel gate), as its ChannelAttention alone does."""
    from ultralytics.nn.modules import ChannelAttention, SpatialAttention

    torch.manual_seed(0)
    original = torch.nn.Sequential(SpatialAttention(7), ChannelAttention(16))
    model, report = attnkernels.convert(copy.deepcopy(original))
    assert [c[1:] for c in report.converted] == [
        ("SpatialAttention", "UltralyticsSpatialAttention"),
        ("ChannelAttention", "UltralyticsChannelAttention")] and not report.left_alone
    x = torch.randn(2, 16, 9, 11)
    assert_matches_oracle(model(x), original(x), original.double()(x.double()), "y")
