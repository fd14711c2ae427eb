"""Export of a converted network: torch.onnx.export gives a graph of standard
ONNX operators (the fused modules trace their reference decomposition, with no
pools at all) that onnxruntime runs to the same numbers; torch.export.export
keeps the fused ops, with a dynamic batch size."""
import copy

import onnxruntime
import pytest
import torch

from attnkernels._core.modules import FusedFamily
from utils import WHOLE_NETWORK, assert_matches_oracle, converted_zoo, nudged

# ONNX operators the attention modules may decompose into (plus the zoo's own
# Conv, BatchNormalization, Relu and Gemm): no pooling of any kind.
STANDARD_OPS = {"Add", "BatchNormalization", "Concat", "Conv", "Gather", "Gemm", "HardSigmoid",
                "HardSwish", "MatMul", "Mul", "Pad", "ReduceMax", "ReduceMean", "ReduceSum",
                "Relu", "Pow", "Reshape", "Sigmoid", "Split", "Squeeze", "Transpose", "Unsqueeze",
                "Sub", "Div", "Cast", "Constant", "Slice", "Expand", "Shape", "Identity"}


def _zoo():
    model, converted, x = converted_zoo()
    return model, converted.eval(), x


@pytest.mark.slow
def test_onnx_export_standard_operators_and_onnxruntime_matches(tmp_path):
    model, converted, x = _zoo()
    path = tmp_path / "zoo.onnx"
    torch.onnx.export(converted, (x,), str(path), dynamo=True, input_names=["x"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", max=64)}})
    import onnx

    graph = onnx.load(str(path)).graph
    nodes = list(graph.node)
    assert {n.domain for n in nodes} <= {"", "ai.onnx"}, "non-standard operator domains"
    ops = {n.op_type for n in nodes}
    assert ops <= STANDARD_OPS, f"unexpected ONNX operators: {sorted(ops - STANDARD_OPS)}"
    assert not any("Pool" in op for op in ops)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (2, 5):
        xb = torch.randn(batch, 3, 24, 20)
        (y_ort,) = session.run(None, {"x": xb.numpy()})
        with torch.no_grad():
            y_e, y_n = model(xb), model(nudged(xb))
            y_o = copy.deepcopy(model).double()(xb.double())
        assert_matches_oracle(torch.from_numpy(y_ort), y_e, y_o, f"onnxruntime, batch {batch}",
                              y_n, WHOLE_NETWORK)


def test_onnx_export_keeps_the_backend_choice_outside_the_export():
    _, converted, x = _zoo()
    with torch.no_grad():
        before = converted(x)
    torch.onnx.export(converted, (x,), dynamo=True)
    assert not torch.onnx.is_in_onnx_export()
    with torch.no_grad():
        assert torch.equal(converted(x), before)  # fused kernels again, bitwise as before


def test_torch_export_keeps_fused_ops_with_a_dynamic_batch():
    model, converted, x = _zoo()
    program = torch.export.export(converted, (x,),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch", max=64)}})
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    fused = {t for t in targets if t.startswith("attnkernels.")}
    # each zoo family's forward op, and no other op but a family's own passes
    # (tests/test_sk.py exports Selective Kernel, whose library layers keep it
    # out of the zoo)
    families = {type(m).__module__.split(".")[1] for m in converted.modules()
                if isinstance(m, FusedFamily)}
    assert {f"attnkernels.{f}_forward.default" for f in families} <= fused, targets
    assert all(any(t.startswith(f"attnkernels.{f}_") for f in families) for t in fused), fused
    exported = program.module()
    for batch in (2, 3):
        xb = torch.randn(batch, 3, 24, 20)
        with torch.no_grad():
            assert torch.equal(exported(xb), converted(xb))
