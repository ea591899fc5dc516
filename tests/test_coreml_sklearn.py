"""scikit-learn -> CoreML: classic Core ML packages (``runtimes.coreml_classic``) and their converter
(``converters.sklearn_coreml``), which coremltools runs only beside scikit-learn <= 1.5.1.

``tests/data/iris_classic.mlpackage`` is what edgeml's converter wrote with scikit-learn 1.5.1 for
``make_pipeline(StandardScaler(), LogisticRegression(multi_class="ovr"))`` fitted on iris with the species
names as labels (``edgeml.convert(model, "coreml", out, name="iris_classic")``): reading it needs no
scikit-learn. The conversion tests run only where coremltools' converter is on (scikit-learn <= 1.5.1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
sklearn = pytest.importorskip("sklearn")

import edgeml  # noqa: E402
from edgeml.converters.sklearn_coreml import check_options, sklearn_to_coreml  # noqa: E402
from edgeml.errors import BackendMissing, ExportError, InputError  # noqa: E402
from edgeml.manifest import MANIFEST_NAME  # noqa: E402
from edgeml.runtimes.coreml import DIM_NAMES  # noqa: E402
from edgeml.runtimes.coreml_classic import class_labels, describe_classic, inspect_classic, is_classic  # noqa: E402
from edgeml.sources.sklearn_source import from_estimator  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "iris_classic.mlpackage"
SPECIES = ["setosa", "versicolor", "virginica"]
_OLD_ENOUGH = tuple(int(p) for p in sklearn.__version__.split(".")[:3] if p.isdigit()) <= (1, 5, 1)
needs_old_sklearn = pytest.mark.skipif(not _OLD_ENOUGH, reason=f"coremltools converts scikit-learn only up to 1.5.1; "
                                                              f"this is {sklearn.__version__}")


@pytest.fixture(scope="module")
def fixture_spec():
    return ct.utils.load_spec(str(FIXTURE))


def test_the_iris_package_reads_as_four_features_in_and_three_species_out(fixture_spec):
    metadata = dict(fixture_spec.description.metadata.userDefined)
    assert is_classic(fixture_spec)
    inputs, outputs = describe_classic(fixture_spec, json.loads(metadata[DIM_NAMES]))
    assert [(s.name, s.shape, s.dtype) for s in inputs] == [("X", ("batch", 4), "float32")]
    assert [(s.name, s.shape, s.dtype) for s in outputs] == [("label", ("batch",), "str"),
                                                             ("probabilities", ("batch", 3), "float32")]
    assert class_labels(fixture_spec) == SPECIES  # the probabilities' columns, in scikit-learn's classes_ order
    info = inspect_classic(FIXTURE, inputs, outputs, metadata, fixture_spec)
    # a scaler (4 shifts, 4 scales) then a one-vs-rest GLM (3 x 4 weights, 3 offsets), all doubles
    assert info["ops"] == {"scaler": 1, "glmClassifier": 1}
    assert info["parameters"] == 4 + 4 + 3 * 4 + 3
    assert (info["precision"], info["deployment_target"], info["quantized"]) == ("fp64", "iOS11", False)


def test_a_classic_package_states_the_batch_dim_the_source_named(fixture_spec):
    inputs, outputs = describe_classic(fixture_spec, {"X": ["rows", None]})
    assert inputs[0].shape == ("rows", 4) and outputs[1].shape == ("rows", 3)


def test_options_a_classic_package_cannot_honour_are_refused_before_anything_is_built():
    assert check_options({"min_target": "iOS17", "precision": None}) == {
        "precision": "fp32", "min_target": "iOS17", "compute_units": "ALL", "compress": None, "calib": None,
        "shapes": None}
    for given, said in (({"precision": "fp16"}, "computes in double"), ({"compress": "int4"}, "--int4/--palettize"),
                        ({"shapes": {"batch": [1, 8]}}, "one row per prediction"), ({"min_target": "iOS9"}, "iOS9"),
                        ({"compute_units": "GPU"}, "compute_units"), ({"layout": "nchw"}, "unknown CoreML option")):
        with pytest.raises(InputError, match=said):
            check_options(given)


@pytest.mark.skipif(_OLD_ENOUGH, reason="coremltools' scikit-learn converter is on beside scikit-learn <= 1.5.1")
def test_above_scikit_learn_1_5_1_the_edge_is_exit_3_naming_the_limit_and_onnx(tmp_path):
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(np.eye(3), [0.0, 1.0, 2.0])
    with pytest.raises(BackendMissing, match=rf"0\.17 to 1\.5\.1, and this is {sklearn.__version__}: ship --to onnx"):
        sklearn_to_coreml(from_estimator(model, None, None), tmp_path / "m.mlpackage", check_options({}))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True)


@needs_old_sklearn
def test_a_pipeline_converts_to_a_package_checked_on_its_structure(cancer, tmp_path):
    """The binary LogisticRegression computes one-vs-rest whatever multi_class says: converted as such."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(*cancer)
    result = edgeml.convert(model, "coreml", tmp_path, name="clf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.mlpackage", MANIFEST_NAME]
    entry = json.loads((tmp_path / MANIFEST_NAME).read_text())["artifacts"][0]
    assert entry["check"]["status"] == "unverified" and "checked here: input names" in entry["check"]["reason"]
    assert [(s["name"], s["shape"]) for s in entry["inputs"]] == [("X", ["batch", 30])]
    assert [(s["name"], s["shape"], s["dtype"]) for s in entry["outputs"]] == [
        ("label", ["batch"], "int64"), ("probabilities", ["batch", 2], "float32")]
    conversion = entry["build"]["conversion"][0]
    assert (conversion["model_type"], conversion["stages"], conversion["sklearn"]) == (
        "pipelineClassifier", ["scaler", "glmClassifier"], sklearn.__version__)
    assert "one-vs-rest" in conversion["notes"][0]
    assert conversion["minimum_deployment_target"] == "iOS11"  # the classic spec's, older than any --min-target
    assert result.artifacts[0].check is None


@needs_old_sklearn
def test_a_forest_regressor_gives_its_value_as_variable(tmp_path):
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    model = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(*load_diabetes(return_X_y=True))
    edgeml.convert(model, "coreml", tmp_path, name="reg")
    entry = json.loads((tmp_path / MANIFEST_NAME).read_text())["artifacts"][0]
    assert [(s["name"], s["shape"]) for s in entry["outputs"]] == [("variable", ["batch", 1])]
    assert entry["build"]["conversion"][0]["model_type"] == "treeEnsembleRegressor"


@needs_old_sklearn
@pytest.mark.parametrize("make, said", [
    (lambda: __import__("sklearn.linear_model").linear_model.LogisticRegression(max_iter=1000), "multinomial"),
    (lambda: __import__("sklearn.ensemble").ensemble.ExtraTreesClassifier(n_estimators=2), "no Core ML form for ExtraTreesClassifier"),
])
def test_what_core_ml_cannot_compute_is_an_export_error_pointing_to_onnx(make, said, tmp_path):
    from sklearn.datasets import load_iris

    with pytest.raises(ExportError, match=said) as refused:
        edgeml.convert(make().fit(*load_iris(return_X_y=True)), "coreml", tmp_path)
    assert "--to onnx" in str(refused.value)
    assert not list(tmp_path.glob("*.mlpackage"))


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predicts on macOS only")
def test_on_macos_the_package_predicts_each_row_as_its_own_numbers_say(fixture_spec):
    """Against the package's own scaler and GLM in numpy: one-vs-rest sigmoids, normalized (as scikit-learn's)."""
    from sklearn.datasets import load_iris

    scaler, glm = (getattr(s, s.WhichOneof("Type")) for s in fixture_spec.pipelineClassifier.pipeline.models)
    X = load_iris().data[::10].astype(np.float32)
    z = (X.astype(np.float64) + np.array(scaler.shiftValue)) * np.array(scaler.scaleValue)
    scores = 1 / (1 + np.exp(-(z @ np.array([w.value for w in glm.weights]).T + np.array(glm.offset))))
    with edgeml.load(FIXTURE) as model:
        labels, probabilities = model(X)
    np.testing.assert_allclose(probabilities, scores / scores.sum(1, keepdims=True), atol=1e-5)
    assert list(labels) == [SPECIES[i] for i in scores.argmax(1)]


def test_the_runtime_predicts_a_batch_row_by_row_and_orders_the_probabilities(fixture_spec, monkeypatch):
    """What CoreMLRuntime does on macOS around Core ML, run here with MLModel stood in for by the package's own
    numbers: each row goes to predict as its doubles, and each row's probability dictionary (in whatever key
    order Core ML gives it) comes back as a row of the (batch, classes) array in the order of the classes."""
    import edgeml.runtimes.coreml as coreml_runtime
    from sklearn.datasets import load_iris

    scaler, glm = (getattr(s, s.WhichOneof("Type")) for s in fixture_spec.pipelineClassifier.pipeline.models)
    rows_seen = []

    class _MLModel:
        def __init__(self, path, compute_units=None):
            pass

        def predict(self, rows):
            answers = []
            for row in rows:
                rows_seen.append(row["X"])
                z = (row["X"] + np.array(scaler.shiftValue)) * np.array(scaler.scaleValue)
                scores = 1 / (1 + np.exp(-(np.array([w.value for w in glm.weights]) @ z + np.array(glm.offset))))
                probabilities = dict(zip(SPECIES, scores / scores.sum()))
                answers.append({"label": SPECIES[int(scores.argmax())],
                                "probabilities": dict(reversed(list(probabilities.items())))})
            return answers

    monkeypatch.setattr(coreml_runtime, "sys", type("darwin", (), {"platform": "darwin"}))
    monkeypatch.setattr(ct.models, "MLModel", _MLModel)
    X = load_iris().data[::10].astype(np.float32)
    with edgeml.load(FIXTURE) as model:
        labels, probabilities = model(X)
    assert len(rows_seen) == len(X) and all(r.dtype == np.float64 and r.shape == (4,) for r in rows_seen)
    np.testing.assert_array_equal(np.stack(rows_seen), X.astype(np.float64))
    assert probabilities.shape == (len(X), 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-6)
    assert list(labels) == [SPECIES[i] for i in probabilities.argmax(1)]
    assert set(labels) == set(SPECIES)  # every tenth iris row: all three species, each in its own column
