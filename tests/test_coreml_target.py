"""``--to coreml``: an mlprogram package built from the PyTorch source with coremltools. What Linux can check
is checked here (the spec's inputs, ranges, outputs, precision and ops; the manifest; verify); predicting
needs macOS, so on Linux the package is recorded ``unverified`` with the reason, never ``passed``, and the
runtime refuses with exit 3. The prediction test runs on macOS only."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml.cli import main
from edgeml.errors import BackendMissing, ExportError, InputError
from edgeml.manifest import MANIFEST_NAME

from .conftest import torch

pytest.importorskip("coremltools")


class _Net(torch.nn.Module):
    """A small CNN: convolution, pooling, a linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class _Encoder(torch.nn.Module):
    """A transformer encoder over a dynamic sequence."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(4, 16)
        self.encoder = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 1)

    def forward(self, x):
        return self.encoder(self.embed(x))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("coreml")
    notes = []
    result = edgeml.convert(_Net().eval(), "onnx,coreml", out, inputs=["x:1..8x3x16x16"], progress=notes.append)
    return result, out, notes


def _entry(out, name):
    return next(e for e in json.loads((out / MANIFEST_NAME).read_text())["artifacts"] if e["file"] == name)


def test_a_cnn_becomes_a_package_with_its_range_and_fp16_compute(built):
    result, out, _ = built
    package = out / "model.mlpackage"
    assert [a.path for a in result.artifacts] == [out / "model.onnx", package]
    info = edgeml.inspect(package)
    assert info["inputs"] == [{"name": "x", "shape": ["batch", 3, 16, 16], "dtype": "float32",
                               "ranges": {"batch": [1, 8, 8]}}]
    assert [o["name"] for o in info["outputs"]] == ["output"]  # the source's name, not torch's node name
    assert info["precision"] == "fp16" and {"conv", "linear"} <= set(info["ops"])
    assert info["outputs"][0]["dtype"] == "float32"  # fp16 compute, float32 out: what the ONNX artifact gives
    assert (info["compression"], info["quantized"], info["deployment_target"]) == (None, False, "iOS16")
    assert info["weights"]["float16"] == 8 * 3 * 3 * 3 + 8 + 4 * 8 + 4 and info["enumerated_shapes"] == {}
    assert json.loads(info["metadata"]["edgeml.dim_range"]) == {"batch": [1, 8, 8]}
    entry = _entry(out, package.name)
    build = entry["build"]["conversion"][0]
    assert build["edge"] == "torch -> coreml" and build["minimum_deployment_target"] == "iOS16"
    assert build["precision"] == "fp16" and build["compute_units"] == "ALL"
    assert edgeml.verify(out).ok


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the package is checked numerically instead")
def test_off_macos_the_check_is_structural_and_says_so(built):
    _, out, notes = built
    check = _entry(out, "model.mlpackage")["check"]
    assert check["status"] == "unverified" and "run only on macOS" in check["reason"]
    assert "checked here: input names, ranks, fixed dims and ranges, and output names" in check["reason"]
    with pytest.raises(BackendMissing, match="run only on macOS"):
        edgeml.load(out / "model.mlpackage", options={"compute_units": "CPU_AND_NE"})
    for options, message in (({"units": "ALL"}, "CoreML takes compute_units"), ({"compute_units": "NE"}, "CPU_AND_NE")):
        with pytest.raises(InputError, match=message):  # the user's mistake, named before the platform
            edgeml.load(out / "model.mlpackage", options=options)
    bench = CliRunner().invoke(main, ["bench", str(out / "model.mlpackage")])
    assert bench.exit_code == 3 and "run only on macOS" in bench.output


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predicts only on macOS")
def test_on_macos_the_package_computes_what_the_source_does(built):
    _, out, _ = built
    check = _entry(out, "model.mlpackage")["check"]
    assert check["status"] == "passed"
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with edgeml.load(out / "model.mlpackage") as package:
        got = package.run({"x": x})["output"]
    np.testing.assert_allclose(got, _Net().eval()(torch.from_numpy(x)).detach().numpy(), atol=1e-2, rtol=1e-2)


def test_fp32_and_a_transformer_over_a_dynamic_sequence(tmp_path):
    result = edgeml.convert(_Encoder().eval(), "coreml", tmp_path, inputs=["x:1x2..16x4"], target_options={
        "coreml": {"precision": "fp32", "min_target": "iOS17"}})
    assert [a.path.name for a in result.artifacts] == ["model.mlpackage"]  # no ONNX asked, none built
    info = edgeml.inspect(tmp_path / "model.mlpackage")
    assert info["inputs"][0]["ranges"] == {"x_dim1": [2, 16, 16]} and info["precision"] == "fp32"
    assert _entry(tmp_path, "model.mlpackage")["build"]["conversion"][0]["minimum_deployment_target"] == "iOS17"


def test_bad_requests_fail_before_anything_is_written(tmp_path, built):
    _, out, _ = built
    cases = [
        (lambda: edgeml.convert(out / "model.onnx", "coreml", tmp_path / "a"), "built from a sklearn or torch model"),
        (lambda: edgeml.convert(_Net().eval(), "coreml", tmp_path / "b", inputs=["x:batchx3x16x16"]),
         "CoreML needs a finite range for the dim 'batch'"),
        (lambda: edgeml.convert(_Net().eval(), "coreml", tmp_path / "c", inputs=["x:1x3x16x16"],
                                target_options={"coreml": {"precision": "int4"}}), "--precision 'int4'"),
        (lambda: edgeml.convert(_Net().eval(), "onnx", tmp_path / "d", inputs=["x:1x3x16x16"],
                                target_options={"coreml": {}}), "--to does not name"),
        (lambda: edgeml.convert(_Net().eval(), "coreml", tmp_path / "e", inputs=["x:1x3x16x16"], int8=True),
         "add onnx to --to"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message):
            call()
    assert not any(p.suffix in (".onnx", ".mlpackage") for p in tmp_path.rglob("*"))


def test_a_pt2_and_two_inputs_keep_their_own_bounds_and_names(tmp_path):
    """The package's own spec (not the metadata) carries each input's range, under the source's dim names."""
    import coremltools as ct

    class Two(torch.nn.Module):
        def forward(self, x, y):
            return x.sum(1), y.mean(1)

    program = torch.export.export(Two(), (torch.randn(2, 4), torch.randn(3, 4)), dynamic_shapes={
        "x": {0: torch.export.Dim("a", min=1, max=8)}, "y": {0: torch.export.Dim("n", min=1, max=4)}})
    torch.export.save(program, tmp_path / "two.pt2")
    edgeml.convert(tmp_path / "two.pt2", "coreml", tmp_path / "out")
    raw = ct.utils.load_spec(str(tmp_path / "out" / "two.mlpackage"))
    bounds = [(r.lowerBound, r.upperBound) for f in raw.description.input
              for r in f.type.multiArrayType.shapeRange.sizeRanges[:1]]
    assert bounds == [(1, 8), (1, 4)]  # bounded in the package itself, not only in edgeml's metadata
    info = edgeml.inspect(tmp_path / "out" / "two.mlpackage")
    (x, xr), (y, yr) = [(i["shape"][0], i["ranges"]) for i in info["inputs"]]
    assert x != y and xr == {x: [1, 8, 8]} and yr == {y: [1, 4, 4]}  # two dims, each with its own range
    assert [o["name"] for o in info["outputs"]] == ["output_0", "output_1"]


def test_the_cli_takes_precision_and_min_target(tmp_path):
    torch.save(_Net().state_dict(), tmp_path / "net.pth")
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "net.pth"), "--model-class", f"{__name__}:_Net",
                                       "--input", "x:1..2x3x16x16", "--to", "coreml", "--precision", "fp32",
                                       "--min-target", "macOS14", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    build = _entry(tmp_path / "out", "net.mlpackage")["build"]["conversion"][0]
    assert (build["precision"], build["minimum_deployment_target"]) == ("fp32", "macOS14")
    assert "unverified" not in _entry(tmp_path / "out", "net.mlpackage")["build"]


def test_a_scikit_learn_model_to_coreml_is_exit_3_naming_the_version_limit(logreg, tmp_path):
    """coremltools converts scikit-learn only beside scikit-learn <= 1.5.1: exit 3 says so and points to ONNX,
    after the ONNX artifact it was asked for beside it, and writes no package."""
    import sklearn

    from coremltools import _deps

    if _deps._HAS_SKLEARN:
        pytest.skip("coremltools converts scikit-learn <= 1.5.1: tests/test_coreml_sklearn.py covers it")
    with pytest.raises(BackendMissing) as refused:
        edgeml.convert(logreg, "onnx,coreml", tmp_path, name="clf")
    message = str(refused.value)
    assert f"only beside scikit-learn 0.17 to 1.5.1, and this is {sklearn.__version__}" in message
    assert "--to onnx" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.onnx", MANIFEST_NAME]


def test_a_package_whose_manifest_names_a_file_outside_it_is_refused_unread(tmp_path):
    """A crafted Manifest.json naming /dev/zero or ../ made coremltools read forever or outside the package:
    the spec file it names must be a file inside the package, found before anything is read."""
    import shutil

    from edgeml.runtimes.coreml import _spec_file

    package = tmp_path / "p.mlpackage"
    shutil.copytree(Path(__file__).parent / "data" / "iris_classic.mlpackage", package)
    manifest = json.loads((package / "Manifest.json").read_text())
    entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    assert _spec_file(package) == package / "Data" / entry["path"]
    for named in ("/dev/zero", "../../../etc/passwd", "com.apple.CoreML/missing.mlmodel"):
        entry["path"] = named
        (package / "Manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(InputError, match="which is no file inside it"):
            edgeml.inspect(package)


class _Determinant(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.det(x.reshape(-1, 4, 4))  # no Core ML converter in coremltools 9


def test_an_op_coremltools_lacks_is_exit_2_naming_the_op_and_its_layer(tmp_path):
    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = torch.nn.Linear(16, 16), _Determinant()

        def forward(self, x):
            return self.head(self.embed(x))

    with pytest.raises(ExportError) as refused:
        edgeml.convert(_Model().eval(), "coreml", tmp_path, inputs=["x:1x16"])
    message = str(refused.value)
    # (decomposed first, as ops coremltools lacks are: into _linalg_det, which it lacks too)
    assert refused.value.exit_code == 2 and re.search(r"Unsupported fx node _?linalg_det", message)
    assert "in layer head (_Determinant)" in message and "test_coreml_target.py" in message
    assert "or ship the ONNX target" in message
    assert not list(tmp_path.glob("*.mlpackage"))


def test_a_hugging_face_bert_folder_becomes_a_package(tiny_bert_dir, tmp_path):
    """A pretrained-model folder as users bring it: transformers' BERT calls ops coremltools has no converter
    for (``new_ones``, ``__and__``), which are decomposed; the rest (layer norm, gelu) is converted as written."""
    result = edgeml.convert(tiny_bert_dir, "coreml", tmp_path, shapes=["batch=1..4"])
    info = edgeml.inspect(result.artifacts[0].path)
    assert [(i["name"], i["shape"], i["dtype"]) for i in info["inputs"]] == [
        (name, ["batch", "sequence"], "int32") for name in ("input_ids", "attention_mask", "token_type_ids")]
    assert info["inputs"][0]["ranges"] == {"batch": [1, 4, 4], "sequence": [1, 128, 128]}  # max_position_embeddings
    assert [o["name"] for o in info["outputs"]] == ["last_hidden_state"]
    assert {"layer_norm", "gelu", "logical_and"} <= set(info["ops"])
