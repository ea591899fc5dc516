"""--fp16 end to end: NAME.fp16.onnx beside the FP32 artifact, with FP16 weights and float32 inputs and outputs,
run on onnxruntime and checked against the source; the fallback that keeps nodes in FP32 where FP16 loses the
result; the refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import edgeml
from edgeml.cli import main
from edgeml.converters import onnx_fp16
from edgeml.errors import BackendMissing, CheckFailed, InputError

from .conftest import Encoder, SmallCNN, nn, torch


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def _weight_types(path) -> set:
    model = onnx.load(str(path))
    return {onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer
            if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}


def _io_types(path) -> set:
    graph = onnx.load(str(path)).graph
    return {onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type) for v in [*graph.input, *graph.output]}


def _entry(folder, name) -> dict:
    return next(a for a in json.loads((folder / "edgeml.json").read_text())["artifacts"] if a["file"] == name)


class Cancellation(nn.Module):
    """(x + 1e4) - 1e4: FP16 stores 1e4 + x to 8 units, so the difference it leaves is all rounding."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x):
        return ((self.linear(x) + 1e4) - 1e4) * 10


@pytest.fixture(scope="module")
def cnn_build(tmp_path_factory):
    """A CNN with BatchNorm as a .pt2, converted on the command line with --fp16 --int8 --to onnx,ort: both
    variants from the one FP32 artifact."""
    folder = tmp_path_factory.mktemp("fp16-cnn")
    torch.manual_seed(0)
    model = SmallCNN().eval()
    path = folder / "cnn.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch", max=64)},)), str(path))
    code, out = _cli("convert", path, "--fp16", "--int8", "--to", "onnx,ort", "-o", folder / "build")
    return model, folder / "build", code, out


def test_cli_fp16_writes_a_checked_fp16_artifact_beside_int8_and_their_ort_files(cnn_build):
    model, build, code, out = cnn_build
    assert code == 0, out
    assert "cnn.fp16.onnx (fp16" in out and "FP16: 100% of the weights in FP16" in out
    assert {p.name for p in build.iterdir()} >= {"cnn.onnx", "cnn.fp16.onnx", "cnn.int8.onnx", "cnn.ort",
                                                 "cnn.fp16.ort", "cnn.int8.ort"}
    fp16 = build / "cnn.fp16.onnx"
    assert _weight_types(fp16) == {"FLOAT16"} and _io_types(fp16) == {"FLOAT"}
    assert fp16.stat().st_size < (build / "cnn.onnx").stat().st_size
    entry = _entry(build, "cnn.fp16.onnx")
    assert entry["precision"] == "fp16"
    assert entry["check"]["status"] == "passed" and entry["check"]["against"] == "the source model"
    assert entry["check"]["precision"] == "fp16"
    record = entry["build"]["conversion"][0]
    assert record["converter"].startswith("onnxconverter-common") and record["fp16_weight_share"] == 1.0
    assert record["kept_fp32"] == {} and record["rounds"][0]["passed"]
    assert _entry(build, "cnn.fp16.ort")["build"]["built_from"] == "cnn.fp16.onnx"
    x = np.random.default_rng(3).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with edgeml.load(fp16) as runtime:
        got = runtime(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, model(torch.from_numpy(x)).detach().numpy(), atol=1e-2, rtol=1e-2)


def test_transformer_encoder_in_fp16(tmp_path):
    """nn.TransformerEncoder, fused by onnxruntime (SkipLayerNormalization, which has no float16 CPU kernel)."""
    torch.manual_seed(0)
    model = Encoder().eval()
    result = edgeml.convert(model, "onnx", tmp_path, inputs=["ids:batch=1..16x16:int64"], name="enc", fp16=True)
    assert [a.path.name for a in result.artifacts] == ["enc.onnx", "enc.fp16.onnx"]
    assert result.artifacts[0].record["fusion"]["applied"]
    fp16 = result.artifacts[1]
    assert fp16.precision == "fp16" and fp16.check.passed and fp16.check.precision == "fp16"
    assert _weight_types(fp16.path) == {"FLOAT16"} and _io_types(fp16.path) <= {"FLOAT", "INT64"}
    assert fp16.path.stat().st_size < 0.6 * result.artifacts[0].path.stat().st_size
    ids = np.random.default_rng(0).integers(1, 50, (4, 16))
    with edgeml.load(fp16.path) as runtime:
        got = runtime(ids)
    np.testing.assert_allclose(got, model(torch.from_numpy(ids)).detach().numpy(), atol=1e-2, rtol=1e-2)


@pytest.fixture(scope="module")
def cancellation(tmp_path_factory):
    """The model and its FP32 ONNX file, the source of the FP16 conversions below."""
    torch.manual_seed(0)
    model = Cancellation().eval()
    folder = tmp_path_factory.mktemp("fp16-cancel")
    return model, edgeml.convert(model, "onnx", folder, inputs=["x:batch=1..32x8"], name="cancel").onnx


def test_fallback_keeps_the_cancelling_nodes_in_fp32(cancellation, tmp_path):
    model, source = cancellation
    messages = []
    result = edgeml.convert(source, "onnx", tmp_path, fp16=True, progress=messages.append)
    fp16 = result.artifacts[1]
    record = fp16.record["conversion"][0]
    assert not record["rounds"][0]["passed"] and record["rounds"][-1]["passed"]
    kept = record["kept_fp32"]
    assert any("Sub" in why for why in kept.values()) and any("feeds" in why for why in kept.values()), kept
    assert fp16.check.passed and fp16.precision == "fp16"
    assert any(m.startswith("keeping in FP32") for m in messages)
    x = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
    with edgeml.load(fp16.path) as runtime:
        np.testing.assert_allclose(runtime(x), model(torch.from_numpy(x)).detach().numpy(), atol=2e-2, rtol=1e-2)


def test_fp16_failing_after_the_rounds_writes_nothing(cancellation, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_fp16, "MAX_ROUNDS", 0)
    with pytest.raises(CheckFailed, match=r"cancel.fp16.onnx: FP16 is off FP32 after 1 round\(s\), worst on output"):
        edgeml.convert(cancellation[1], "onnx", tmp_path, fp16=True)
    assert not (tmp_path / "cancel.fp16.onnx").exists()
    assert [a["file"] for a in json.loads((tmp_path / "edgeml.json").read_text())["artifacts"]] == ["cancel.onnx"]


def test_fp16_refuses_scikit_learn_models(logreg, tmp_path):
    with pytest.raises(InputError, match="--fp16 applies to neural networks") as failure:
        edgeml.convert(logreg, "onnx", tmp_path / "build", inputs=["X:1x30"], fp16=True)
    assert failure.value.exit_code == 2
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").iterdir())


def test_fp16_without_onnxconverter_common_is_exit_3_before_any_export(cancellation, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)
    monkeypatch.delitem(sys.modules, "onnxconverter_common.float16", raising=False)
    with pytest.raises(BackendMissing, match=r"pip install 'edgeml\[fp16\]'") as failure:
        edgeml.convert(cancellation[1], "onnx", tmp_path / "build", fp16=True)
    assert failure.value.exit_code == 3
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").iterdir())


def test_float16_weights_are_found_without_onnx_and_garbage_is_not_an_error():
    """OnnxRuntime keeps the NCHWc pass (which crashes onnxruntime 1.32 on some float16 graphs) away from
    float16 models by reading the protobuf wire format itself: same answer as onnx's parser, and bytes that
    are not a model give False (onnxruntime then says what they are) instead of an exception."""
    from onnx import TensorProto, helper, numpy_helper

    from edgeml.runtimes.onnxrt import _float16_weights

    def model(dtype) -> bytes:  # x * w + b, w of ``dtype``; the float32 b comes first: the reader looks past it
        weight = numpy_helper.from_array(np.full((4,), 0.5, dtype), "w")
        bias = numpy_helper.from_array(np.zeros((4,), np.float32), "b")
        graph = helper.make_graph(
            [helper.make_node("Cast", ["x"], ["xc"], to=weight.data_type), helper.make_node("Mul", ["xc", "w"], ["m"]),
             helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT), helper.make_node("Add", ["mf", "b"], ["y"])],
            "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [bias, weight])
        return helper.make_model(graph, producer_name="test", opset_imports=[helper.make_opsetid("", 17)]
                                 ).SerializeToString()

    for data in (model(np.float16), model(np.float32)):
        expected = any(init.data_type == onnx.TensorProto.FLOAT16 for init in onnx.load_from_string(data).graph.initializer)
        assert _float16_weights(data) is expected
        assert all(_float16_weights(data[:cut]) in (True, False) for cut in range(0, len(data), 7))
    rng = np.random.default_rng(0)
    assert all(_float16_weights(rng.bytes(int(n))) in (True, False) for n in rng.integers(0, 400, 300))
