"""The source side of the plug-in structure: a framework is one entry of ``sources.FRAMEWORKS`` and its files one
``sources.READERS`` entry; loading, the reference the check runs, the export and the manifest's tool list all read
the tables, so a framework nobody named before converts, is checked and is recorded without any other edit."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import edgeml
from edgeml import sources
from edgeml.errors import CheckFailed, InputError
from edgeml.manifest import MANIFEST_NAME, tool_versions
from edgeml.runtimes.base import Runtime
from edgeml.sources.base import SourceModel
from edgeml.spec import TensorSpec


class Affine:
    """A model of a framework edgeml does not know: y = x @ weight + bias."""

    def __init__(self, weight, bias):
        self.weight, self.bias = np.asarray(weight, np.float32), np.asarray(bias, np.float32)


class AffineRuntime(Runtime):
    backend = "affine"

    def __init__(self, model: Affine):
        super().__init__([TensorSpec("x", ("batch", model.weight.shape[0]), "float32")],
                         [TensorSpec("y", ("batch", model.weight.shape[1]), "float32")])
        self.model = model

    def _run(self, feeds):
        return [feeds["x"] @ self.model.weight + self.model.bias]


def _export(source: SourceModel, opset):
    from onnx import TensorProto, helper, numpy_helper

    model = source.model
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", model.weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", model.weight.shape[1]])],
        [numpy_helper.from_array(model.weight, "w"), numpy_helper.from_array(model.bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset or 17)]), {"exporter": "affine"}


AFFINE = sources.Framework(
    "affine", owns=lambda obj: isinstance(obj, Affine),
    from_object=lambda obj, request, path=None, fmt=None, sha=None: SourceModel(
        "affine", obj, [TensorSpec("x", ("batch", obj.weight.shape[0]), "float32")], fmt or "Affine object"),
    reference=lambda source, device="cpu", threads=None: AffineRuntime(source.model),
    export=_export, tools=("numpy",))


@pytest.fixture
def affine_framework(monkeypatch):
    monkeypatch.setitem(sources.FRAMEWORKS, "affine", AFFINE)
    return AFFINE


def test_a_framework_added_to_the_table_converts_and_is_checked(affine_framework, tmp_path):
    rng = np.random.default_rng(0)
    model = Affine(rng.normal(size=(4, 3)), rng.normal(size=3))
    result = edgeml.convert(model, output_dir=tmp_path, name="affine")
    assert result.source.kind == "affine" and result.artifacts[0].check.passed
    x = rng.normal(size=(5, 4)).astype(np.float32)
    with edgeml.load(result.onnx) as runtime:
        np.testing.assert_allclose(runtime(x), x @ model.weight + model.bias, rtol=1e-5, atol=1e-6)
    entry = json.loads((tmp_path / MANIFEST_NAME).read_text())["artifacts"][0]
    assert entry["source"]["framework"] == "affine" and entry["build"]["exporter"] == "affine"


def test_the_check_runs_the_frameworks_own_reference(affine_framework, tmp_path, monkeypatch):
    """The export and the reference disagree: the framework's reference is what the artifact is judged by."""
    wrong = dataclasses.replace(AFFINE, export=lambda source, opset: _export(
        dataclasses.replace(source, model=Affine(source.model.weight, source.model.bias + 1)), opset))
    monkeypatch.setitem(sources.FRAMEWORKS, "affine", wrong)
    with pytest.raises(CheckFailed):
        edgeml.convert(Affine(np.eye(2), np.zeros(2)), output_dir=tmp_path, name="affine")
    assert not (tmp_path / "affine.onnx").exists()


def test_objects_and_files_go_to_the_framework_that_reads_them(tmp_path):
    from sklearn.linear_model import LinearRegression

    assert sources.load_object(LinearRegression().fit(np.eye(3), [0, 1, 2]), sources.Request()).kind == "sklearn"
    with pytest.raises(InputError, match="cannot convert a builtins.dict"):
        sources.load_object({}, sources.Request())
    odd = tmp_path / "model.xyz"
    odd.write_bytes(b"0")
    with pytest.raises(InputError) as refused:
        sources.load_source(odd)
    # The message lists what the readers read, from the table.
    assert all(suffix in str(refused.value) for reader in sources.READERS for suffix in reader.suffixes)


def test_manifest_tools_come_from_both_tables(monkeypatch):
    monkeypatch.setitem(sources.FRAMEWORKS, "affine", dataclasses.replace(AFFINE, tools=("pytest",)))
    assert "pytest" in tool_versions() and "skl2onnx" in tool_versions()
