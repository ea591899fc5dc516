"""A target added through the backend table: onnxruntime's ORT format (``--to ort``), the file its minimal
and mobile builds load. Built from each ONNX artifact (FP32 and INT8), checked against it, listed in the
manifest, loadable, benchable and inspectable like any artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml import backends
from edgeml.cli import main
from edgeml.errors import InputError
from edgeml.manifest import MANIFEST_NAME

from .conftest import tiny_net, torch

QUICK = ("--runs", "5", "--warmup", "1", "--warmup-ms", "0", "--min-seconds", "0.02", "--max-seconds", "0.2")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ort")
    notes = []
    result = edgeml.convert(tiny_net(), "onnx,ort", out, inputs=["x:batchx8"], int8=True, progress=notes.append)
    return result, out, notes


def test_every_onnx_artifact_gets_its_ort_twin_checked_against_it(built):
    result, out, notes = built
    assert [(a.path.name, a.target) for a in result.artifacts] == [
        ("model.onnx", "onnx"), ("model.int8.onnx", "onnx"), ("model.ort", "ort"), ("model.int8.ort", "ort")]
    entries = {e["file"]: e for e in json.loads((out / MANIFEST_NAME).read_text())["artifacts"]}
    for name, parent in (("model.ort", "model.onnx"), ("model.int8.ort", "model.int8.onnx")):
        entry = entries[name]
        assert entry["target"] == "ort" and entry["check"]["status"] == "passed" and entry["check"]["against"] == parent
        assert entry["build"]["built_from"] == parent and entry["build"]["conversion"][0]["edge"] == "onnx -> ort"
        assert (out / name).read_bytes()[4:8] == b"ORTM"  # the flatbuffer's file identifier, not protobuf
    assert entries["model.int8.ort"]["precision"] == "int8"
    assert edgeml.verify(out).ok
    assert any("converted model.onnx to ort" in n for n in notes)


def test_an_ort_file_loads_and_computes_what_its_onnx_does(built):
    _, out, _ = built
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    with edgeml.load(out / "model.onnx") as onnx_model, edgeml.load(out / "model.ort") as ort_model:
        np.testing.assert_allclose(ort_model.run({"x": x})[ort_model.output_names[0]],
                                   onnx_model.run({"x": x})[onnx_model.output_names[0]], rtol=1e-5, atol=1e-6)


def test_inspect_and_bench_read_ort_files(built):
    _, out, _ = built
    code = CliRunner().invoke(main, ["inspect", str(out / "model.int8.ort"), "--json"])
    assert code.exit_code == 0, code.output
    info = json.loads(code.output)
    assert info["inputs"] == [{"name": "x", "shape": ["batch", 8], "dtype": "float32"}]
    assert info["quantized"] and info["precision"] == "int8" and info["opsets"]["ai.onnx"] > 0
    bench = CliRunner().invoke(main, ["bench", str(out / "model.ort"), *QUICK])
    assert bench.exit_code == 0, bench.output


def test_the_backend_table_plans_and_refuses_by_name(tmp_path):
    assert [(e.source, e.target) for e in backends.path_to("ort")] == [("onnx", "ort")]
    assert backends.path_to("onnx") == []
    with pytest.raises(InputError, match="unknown target 'tflite'; this edgeml builds: onnx, ort, coreml"):
        edgeml.convert(tiny_net(), "onnx,tflite", tmp_path, inputs=["x:batchx8"])
    assert list(tmp_path.iterdir()) == []  # refused before anything is exported


def test_a_missing_foreign_or_damaged_ort_file_is_a_clean_error(built, tmp_path):
    fake, damaged = tmp_path / "fake.ort", tmp_path / "damaged.ort"
    fake.write_bytes(b"\x00" * 64)
    data = (built[1] / "model.ort").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    for path, message in ((fake, "is not an ort format file"), (damaged, "cannot load"),
                          (tmp_path / "missing.ort", "no such file")):
        result = CliRunner().invoke(main, ["inspect", str(path)])
        assert result.exit_code == 2 and message in result.output.lower(), result.output


def test_what_was_converted_from_an_old_onnx_goes_with_it(built, tmp_path):
    """Rebuilding the ONNX artifact without --to ort (or --int8) removes the old .ort and the old INT8 file, which
    compute the old model."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(built[1], out)
    edgeml.convert(tiny_net(), "onnx", out, inputs=["x:batchx8"])
    entries = [e["file"] for e in json.loads((out / MANIFEST_NAME).read_text())["artifacts"]]
    assert "model.ort" not in entries and not (out / "model.ort").exists()
    assert "model.int8.ort" not in entries  # converted from the INT8 file, itself judged against the old FP32
    assert "model.int8.onnx" not in entries and not (out / "model.int8.onnx").exists()
    assert entries == ["model.onnx"] and edgeml.verify(out).ok


def test_load_keeps_source_options_apart_from_the_runtime(built, tmp_path):
    """``source=`` says how to load a source model; an artifact refuses them, naming them."""
    _, out, _ = built
    torch.save(tiny_net().state_dict(), tmp_path / "net.pth")
    x = np.ones((2, 8), np.float32)
    source = {"model_class": "tests.conftest:TwoLayer", "model_kwargs": {"n_in": 8}, "inputs": ["x:batchx8"]}
    with edgeml.load(tmp_path / "net.pth", source=source) as reference, edgeml.load(out / "model.ort") as artifact:
        np.testing.assert_allclose(artifact.run({"x": x})[artifact.output_names[0]],
                                   reference.run({"x": x})[reference.output_names[0]], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="is an ort artifact: inputs apply to source models only"):
        edgeml.load(out / "model.ort", source={"inputs": ["x:1x8"]})


def test_a_token_model_is_checked_in_ort_format_on_its_vocabulary(encoder, tmp_path):
    """The ORT file has no ONNX graph to read what its token ids index: the check takes that from the ONNX file
    it was built from (the ids then span the embedding table, not {0, 1})."""
    result = edgeml.convert(encoder, "onnx,ort", tmp_path, inputs=["ids:batchx12:int64"], name="enc")
    ort_artifact = result.artifacts[-1]
    assert ort_artifact.path.name == "enc.ort" and ort_artifact.check.passed
    assert "ids in [1, 50)" in ort_artifact.check.summary()


def test_in_place_only_what_came_from_the_listed_file_is_rebuilt(built, tmp_path):
    """`edgeml convert build/model.onnx --to ort -o build`: the listed ONNX file is kept as it is, its ORT twin
    rebuilt; what came from the INT8 file (model.int8.ort) stays listed and in place."""
    import shutil

    _, out, _ = built
    folder = tmp_path / "build"
    shutil.copytree(out, folder)
    before = {e["file"]: e for e in json.loads((folder / MANIFEST_NAME).read_text())["artifacts"]}
    result = CliRunner().invoke(main, ["convert", str(folder / "model.onnx"), "--to", "ort", "-o", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"kept {folder / 'model.onnx'} (listed in {MANIFEST_NAME}, as it was)" in result.output
    assert f"wrote {folder / 'model.ort'}" in result.output and "UNVERIFIED" not in result.output
    after = {e["file"]: e for e in json.loads((folder / MANIFEST_NAME).read_text())["artifacts"]}
    assert set(after) == set(before) == {"model.onnx", "model.ort", "model.int8.onnx", "model.int8.ort"}
    assert after["model.int8.ort"] == before["model.int8.ort"] and after["model.onnx"] == before["model.onnx"]
    assert edgeml.verify(folder).ok
