"""Convert real models through the Python API, run the artifacts, compare them with their sources."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeml
from edgeml.files import sha256
from edgeml.sources import reference

from .conftest import TwoLayer, torch


def test_mlp_dynamic_batch_matches_source_accuracy(mlp, digits, tmp_path):
    _, X_test, _, y_test = digits
    result = edgeml.convert(mlp, "onnx", tmp_path, inputs=["x:1x64"], dynamic_batch=True, data={"x": X_test}, name="mlp")
    artifact = result.artifacts[0]
    assert artifact.check.passed and artifact.check.samples == len(X_test)
    assert artifact.check.outputs[0].max_abs < 1e-4
    assert artifact.record["exporter"] == "torch.onnx dynamo"
    with edgeml.load(artifact.path) as model:
        assert model.inputs[0].shape == ("batch", 64)
        logits = model(X_test)
    with torch.inference_mode():
        expected = mlp(torch.from_numpy(X_test)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert (logits.argmax(1) == y_test).mean() == (expected.argmax(1) == y_test).mean() > 0.9


def test_cnn_fixed_batch_is_checked_sample_by_sample(cnn, digits, tmp_path):
    _, X_test, _, y_test = digits
    images = X_test.reshape(-1, 1, 8, 8)
    result = edgeml.convert(cnn, "onnx", tmp_path, inputs=["image:1x1x8x8"])
    check = result.artifacts[0].check
    assert check.passed and check.samples == 16 and check.inputs_from == "generated, seed 0"
    model = edgeml.load(result.onnx)
    assert model.inputs[0].shape == (1, 1, 8, 8)
    labels = np.array([model(img[None]).argmax() for img in images[:100]])
    with torch.inference_mode():
        expected = cnn(torch.from_numpy(images[:100])).argmax(1).numpy()
    assert (labels == expected).all()
    ops = edgeml.inspect(result.onnx)["ops"]
    assert "Conv" in ops and "BatchNormalization" not in ops  # folded into the convolutions


def test_transformer_encoder_with_dynamic_batch(encoder, tmp_path):
    result = edgeml.convert(encoder, "onnx", tmp_path, inputs=["ids:1x12:int64"], dynamic_batch=True, name="encoder")
    assert result.artifacts[0].check.passed
    ids = np.random.default_rng(1).integers(0, 50, size=(3, 12))
    with edgeml.load(result.onnx) as model:
        out = model.run({"ids": ids})["output"]
    with torch.inference_mode():
        expected = encoder(torch.from_numpy(ids)).numpy()
    assert out.shape == (3, 3)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_logistic_regression_pipeline(logreg, cancer, tmp_path):
    _, X_test, _, _ = cancer
    result = edgeml.convert(logreg, "onnx", tmp_path, data={"X": X_test}, name="logreg")
    check = result.artifacts[0].check
    assert check.passed and [o.name for o in check.outputs] == ["label", "probabilities"]
    model = edgeml.load(result.onnx)
    assert (model.predict(X_test) == logreg.predict(X_test)).all()
    np.testing.assert_allclose(model.predict_proba(X_test.astype(np.float64)), logreg.predict_proba(X_test), atol=1e-5)


def test_random_forest(forest, cancer, tmp_path):
    _, X_test, _, _ = cancer
    result = edgeml.convert(forest, "onnx", tmp_path, data={"X": X_test}, name="forest")
    check = result.artifacts[0].check
    assert check.passed and check.outputs[0].label_agreement >= 0.99
    model = edgeml.load(result.onnx)
    agree = (model.predict(X_test) == forest.predict(X_test)).mean()
    assert agree >= 0.99  # only exact probability ties may break differently


def test_column_pipeline_on_a_dataframe(column_pipeline, tabular, tmp_path):
    frame, _ = tabular
    result = edgeml.convert(column_pipeline, "onnx", tmp_path, sample=frame.head(40), name="tabular")
    artifact = result.artifacts[0]
    assert artifact.check.passed and artifact.check.inputs_from == "--sample rows"
    assert [s.name for s in result.source.inputs] == list(frame.columns)
    model = edgeml.load(artifact.path)
    assert {s.name: s.dtype for s in model.inputs}["region"] == "str"
    assert frame["region"].isna().any() and frame["alcohol"].isna().any()
    # Numeric columns are float32 in ONNX, float64 in scikit-learn: a row near a tree split may differ.
    assert (model.predict(frame) == column_pipeline.predict(frame)).mean() >= 0.95
    full = edgeml.compare(reference(result.source), model, model.feeds_from(frame), row_allowance=0.02)
    assert full.passed, full.summary()
    assert full.outputs[0].label_agreement == 1.0 and full.outputs[1].rows_off <= 0.02 * len(frame)


def test_exported_program_file(mlp, tmp_path):
    program = torch.export.export(mlp, (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "mlp.pt2"
    torch.export.save(program, str(path))
    result = edgeml.convert(path, "onnx", tmp_path / "out")
    assert result.source.format == "ExportedProgram (.pt2)"
    assert result.source.inputs[0].shape == ("batch", 64)
    assert result.artifacts[0].check.passed
    model = edgeml.load(result.onnx)
    assert isinstance(model.inputs[0].shape[0], str) and model(np.zeros((5, 64), np.float32)).shape == (5, 10)


def test_static_exported_program_cannot_get_a_dynamic_batch(cnn, tmp_path):
    path = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(cnn, (torch.zeros(1, 1, 8, 8),)), str(path))
    with pytest.raises(edgeml.EdgeMLError, match="fixed shapes.*dynamic_shapes"):
        edgeml.convert(path, "onnx", tmp_path / "out", dynamic_batch=True)
    assert not (tmp_path / "out" / "cnn.onnx").exists()


def test_torchscript_falls_back_to_the_torchscript_exporter(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(TwoLayer()), str(path))
    result = edgeml.convert(path, "onnx", tmp_path / "out", inputs=["x:1x20"])
    record = result.artifacts[0].record
    assert record["exporter"] == "torch.onnx TorchScript (fallback)" and record["fallback_reason"]
    assert result.source.format == "TorchScript" and result.artifacts[0].check.passed


def test_state_dict_with_model_class_and_kwargs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parents[1]))
    torch.manual_seed(0)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": TwoLayer(hidden=8).state_dict(), "epoch": 3}, str(path))
    result = edgeml.convert(path, "onnx", tmp_path / "out", inputs=["x:1x20"], model_class="tests.conftest:TwoLayer",
                            model_kwargs={"hidden": 8})
    assert result.source.format == "state dict + tests.conftest:TwoLayer"
    assert result.artifacts[0].check.passed


def test_onnx_passes_through_optimized_and_checked(mlp, tmp_path):
    first = edgeml.convert(mlp, "onnx", tmp_path / "a", inputs=["x:1x64"], optimize=False)
    second = edgeml.convert(first.onnx, "onnx", tmp_path / "b")
    assert second.source.kind == "onnx" and second.artifacts[0].check.passed
    assert second.artifacts[0].record["optimizer"]["applied"]


def test_manifest_records_artifact_source_tools_and_check(forest, cancer, tmp_path):
    import skops.io

    _, X_test, _, _ = cancer
    source = tmp_path / "forest.skops"
    skops.io.dump(forest, source)
    result = edgeml.convert(source, "onnx", tmp_path / "out", data=None, inputs=None)
    manifest = json.loads(result.manifest.read_text())
    (entry,) = manifest["artifacts"]
    assert entry["file"] == "forest.onnx" and entry["sha256"] == sha256(result.onnx)
    assert entry["precision"] == "fp32" and entry["check"]["status"] == "passed"
    assert entry["check"]["outputs"][1]["max_abs"] < 1e-4
    (spec,) = entry["inputs"]
    assert spec["name"] == "X" and isinstance(spec["shape"][0], str) and spec["shape"][1:] == [30]
    assert entry["opset"]["ai.onnx.ml"] >= 1 and entry["build"]["exporter"] == "skl2onnx"
    assert entry["source"]["sha256"] == sha256(source) and entry["source"]["format"] == "skops"
    assert {"edgeml", "onnx", "onnxruntime", "skl2onnx"} <= set(manifest["environment"]["tools"])
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_torch_runtime_loads_a_pt2_as_the_reference(mlp, tmp_path):
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(mlp, (torch.zeros(1, 64),)), str(path))
    with edgeml.load(path) as model:
        assert model.backend == "torch" and model.output_names == ["output"]
        x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
        with torch.inference_mode():
            np.testing.assert_allclose(model(x), mlp(torch.from_numpy(x)).numpy(), atol=1e-6)


def test_compare_reports_numbers_and_fails_on_a_different_model(mlp, tmp_path):
    a = edgeml.convert(mlp, "onnx", tmp_path / "a", inputs=["x:1x64"], dynamic_batch=True).onnx
    torch.manual_seed(1)
    other = TwoLayer(64, 16, 10).eval()
    b = edgeml.convert(other, "onnx", tmp_path / "b", inputs=["x:1x64"], dynamic_batch=True).onnx
    x = {"x": np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)}
    same = edgeml.compare(str(a), str(a), x)
    assert same.passed and same.outputs[0].max_abs == 0 and same.outputs[0].cosine == pytest.approx(1.0)
    different = edgeml.compare(str(a), str(b), x)
    assert not different.passed and "off by more than" in different.outputs[0].reason


def test_symbolic_sequence_length_stays_symbolic(encoder, tmp_path):
    result = edgeml.convert(encoder, "onnx", tmp_path, inputs=["ids:1xseq:int64"], dynamic_batch=True)
    model = edgeml.load(result.onnx)
    assert model.inputs[0].shape == ("batch", "seq")
    ids = np.random.default_rng(2).integers(0, 50, size=(3, 7))
    with torch.inference_mode():
        np.testing.assert_allclose(model(ids), encoder(torch.from_numpy(ids)).numpy(), atol=1e-4)


def test_estimator_fitted_on_a_numeric_dataframe_takes_one_matrix(cancer, tmp_path):
    import pandas as pd
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target").astype(np.float32)
    target = load_breast_cancer().target
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(frame, target)
    result = edgeml.convert(forest, "onnx", tmp_path, sample=frame.head(30))
    assert [s.name for s in result.source.inputs] == ["X"] and result.artifacts[0].check.passed
    model = edgeml.load(result.onnx)
    assert (model.predict(frame) == forest.predict(frame)).mean() >= 0.99
    assert isinstance(frame, pd.DataFrame)


def test_column_names_with_spaces_survive_the_export(tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer(as_frame=True)
    frame = data.frame[["mean radius", "mean texture", "worst area"]]
    model = make_pipeline(ColumnTransformer([("scale", StandardScaler(), list(frame.columns))]),
                          LogisticRegression()).fit(frame, data.target)
    result = edgeml.convert(model, "onnx", tmp_path, sample=frame.head(50))
    runtime = edgeml.load(result.onnx)
    assert runtime.input_names == ["mean radius", "mean texture", "worst area"]
    assert (runtime.predict(frame) == model.predict(frame)).all()
    assert result.artifacts[0].precision == "fp32"  # the scaler's double constants do not make it fp64


def test_folder_manifest_keeps_every_artifact_and_files_are_readable(mlp, forest, tmp_path):
    import stat

    messages = []
    edgeml.convert(mlp, "onnx", tmp_path, inputs=["x:1x64"], name="mlp")
    edgeml.convert(forest, "onnx", tmp_path, name="forest")
    edgeml.convert(forest, "onnx", tmp_path, name="mlp", progress=messages.append)
    manifest = json.loads((tmp_path / "edgeml.json").read_text())
    assert sorted(a["file"] for a in manifest["artifacts"]) == ["forest.onnx", "mlp.onnx"]
    assert {a["file"]: a["source"]["framework"] for a in manifest["artifacts"]} == {"forest.onnx": "sklearn", "mlp.onnx": "sklearn"}
    assert any(m.startswith("replacing") for m in messages)
    for path in (tmp_path / "mlp.onnx", tmp_path / "edgeml.json"):
        assert path.stat().st_mode & stat.S_IROTH


def test_opset_is_honoured(mlp, tmp_path):
    result = edgeml.convert(mlp, "onnx", tmp_path, inputs=["x:1x64"], opset=17)
    assert edgeml.inspect(result.onnx)["opsets"]["ai.onnx"] == 17 and result.artifacts[0].check.passed


def test_a_closed_runtime_says_so(mlp, tmp_path):
    model = edgeml.load(edgeml.convert(mlp, "onnx", tmp_path, inputs=["x:1x64"]).onnx)
    model.close()
    with pytest.raises(edgeml.EdgeMLError, match="closed"):
        model(np.zeros((1, 64), np.float32))


# -- check holes: fixed batches, output names, non-finite values, tolerances ---------------------------


def _onnx(path, nodes, inputs, outputs):
    """A graph of ``nodes`` over float tensors: inputs and outputs as (name, shape)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node(*n) for n in nodes], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_a_fixed_batch_above_the_generated_count_converts(tmp_path):
    torch.manual_seed(0)
    result = edgeml.convert(TwoLayer(), "onnx", tmp_path, inputs=["x:17x20"])
    check = result.artifacts[0].check
    assert check.passed and check.samples == 17
    assert edgeml.load(result.onnx).inputs[0].shape == (17, 20)


def test_every_sample_is_checked_when_a_fixed_batch_does_not_divide_them(tmp_path):
    same = _onnx(tmp_path / "same.onnx", [("Identity", ["x"], ["y"])], [("x", [4, 3])], [("y", [4, 3])])
    relu = _onnx(tmp_path / "relu.onnx", [("Relu", ["x"], ["y"])], [("x", [4, 3])], [("y", [4, 3])])
    x = np.ones((6, 3), np.float32)
    x[5] = -1  # only the last sample tells the models apart
    result = edgeml.compare(same, relu, {"x": x})
    assert not result.passed and result.samples == 6 and result.outputs[0].rows_off == 1
    assert edgeml.compare(same, relu, {"x": x[:5]}).passed  # 5 samples: one padded chunk, still 5 checked


def test_outputs_are_paired_by_name(tmp_path):
    nodes = [("Relu", ["x"], ["a"]), ("Neg", ["x"], ["b"])]
    ab = _onnx(tmp_path / "ab.onnx", nodes, [("x", ["n", 3])], [("a", ["n", 3]), ("b", ["n", 3])])
    ba = _onnx(tmp_path / "ba.onnx", nodes, [("x", ["n", 3])], [("b", ["n", 3]), ("a", ["n", 3])])
    x = {"x": np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)}
    result = edgeml.compare(ab, ba, x)
    assert result.passed and [o.name for o in result.outputs] == ["a", "b"]


def test_non_finite_values_never_pass_a_check(tmp_path):
    log = _onnx(tmp_path / "log.onnx", [("Log", ["x"], ["y"])], [("x", ["n", 3])], [("y", ["n", 3])])
    x = np.abs(np.random.default_rng(0).standard_normal((4, 3))).astype(np.float32) + 0.1
    assert edgeml.compare(log, log, {"x": x}).passed
    x[2, 1] = -1  # log(-1) is NaN on both sides: NaN == NaN proves nothing
    result = edgeml.compare(log, log, {"x": x})
    assert not result.passed and "the reference gives 1 NaN/Inf value(s)" in result.outputs[0].reason
    x[2, 1] = np.nan
    with pytest.raises(edgeml.EdgeMLError, match=r"input 'x' \(given arrays\) holds 1 NaN or Inf"):
        edgeml.convert(log, "onnx", tmp_path / "out", data={"x": x})
    assert not (tmp_path / "out" / "log.onnx").exists()


@pytest.mark.parametrize("tolerance", [{"atol": float("nan")}, {"rtol": float("inf")}, {"atol": -1e-3}])
def test_tolerances_must_be_finite_and_not_negative(tmp_path, tolerance):
    same = _onnx(tmp_path / "same.onnx", [("Identity", ["x"], ["y"])], [("x", ["n", 3])], [("y", ["n", 3])])
    with pytest.raises(edgeml.EdgeMLError, match="tolerances must be >= 0 and finite"):
        edgeml.compare(same, same, {"x": np.zeros((2, 3), np.float32)}, **tolerance)
    with pytest.raises(edgeml.EdgeMLError, match="tolerances must be >= 0 and finite"):
        edgeml.convert(same, "onnx", tmp_path / "out", **tolerance)
    assert not (tmp_path / "out").exists()
