"""Artifacts that are folders (a CoreML ``.mlpackage`` is one): written whole or not at all, replaced in one
step, hashed over every file inside, verified and removed like files. A backend registered by the test (its
artifact: the ONNX file and a small JSON in a folder) takes them through the real pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgeml
from edgeml import backends
from edgeml.errors import InputError
from edgeml.files import sha256, size_of
from edgeml.manifest import MANIFEST_NAME, remove_artifact

from .conftest import torch


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.layer(x)


@pytest.fixture(scope="module")
def folder_backend():
    """``--to pkgdir``: NAME.pkgdir/ holding ``Data/model.onnx`` and ``Manifest.json``, run on onnxruntime."""
    from edgeml.backends.onnx import inspect_onnx
    from edgeml.runtimes.onnxrt import OnnxRuntime

    def build(onnx_file: Path, out: Path) -> dict:
        (out / "Data").mkdir(parents=True)
        shutil.copyfile(onnx_file, out / "Data" / "model.onnx")
        (out / "Manifest.json").write_text(json.dumps({"model": "Data/model.onnx"}))
        return {"converter": "copied into a folder"}

    def runtime(path, device="cpu", threads=None):
        return OnnxRuntime(Path(path) / "Data" / "model.onnx", device=device, threads=threads)

    def inspect(path):
        if not (Path(path) / "Manifest.json").is_file():
            raise InputError(f"{path} has no Manifest.json; convert it again")
        return {**inspect_onnx(Path(path) / "Data" / "model.onnx"), "file": str(path), "size_bytes": size_of(path)}

    backend = backends.Backend("pkgdir", ".pkgdir", "a folder artifact (test)", runtime, inspect, folder=True)
    edge = backends.Edge("onnx", "pkgdir", build)
    backends.register(backend, edge)
    yield backend
    del backends.BACKENDS["pkgdir"]
    backends.EDGES.remove(edge)


def _convert(out):
    return edgeml.convert(_Net().eval(), "onnx,pkgdir", out, inputs=["x:batchx4"])


@pytest.fixture(scope="module")
def built(folder_backend, tmp_path_factory):
    """One conversion; tests that change the folder work on a copy of it."""
    out = tmp_path_factory.mktemp("built")
    return _convert(out), out


@pytest.fixture
def copy(built, tmp_path):
    shutil.copytree(built[1], tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_a_folder_artifact_is_built_checked_listed_and_verified(built):
    result, tmp_path = built
    package = tmp_path / "model.pkgdir"
    assert [a.path for a in result.artifacts] == [tmp_path / "model.onnx", package]
    assert sorted(p.relative_to(package).as_posix() for p in package.rglob("*")) == [
        "Data", "Data/model.onnx", "Manifest.json"]
    entry = next(e for e in json.loads((tmp_path / MANIFEST_NAME).read_text())["artifacts"] if e["file"] == package.name)
    assert entry["sha256"] == sha256(package) and entry["size_bytes"] == size_of(package)
    assert entry["check"]["status"] == "passed" and entry["check"]["against"] == "model.onnx"
    assert edgeml.verify(tmp_path).ok
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_rebuild_replaces_the_whole_folder(copy):
    tmp_path = copy
    (tmp_path / "model.pkgdir" / "stale.bin").write_bytes(b"from an older build")
    _convert(tmp_path)
    assert not (tmp_path / "model.pkgdir" / "stale.bin").exists()
    assert edgeml.verify(tmp_path).ok


@pytest.mark.parametrize("change", ["byte", "new file", "renamed file", "empty folder", "link"])
def test_any_change_inside_the_folder_fails_verify(copy, change):
    tmp_path = copy
    assert edgeml.verify(tmp_path).ok  # the copy is as listed
    package = tmp_path / "model.pkgdir"
    if change == "byte":
        data = (package / "Manifest.json").read_bytes()
        (package / "Manifest.json").write_bytes(data[:-1] + b" ")  # same size, other bytes
    elif change == "new file":
        (package / "Data" / "extra.txt").write_text("x")
    elif change == "renamed file":
        (package / "Manifest.json").rename(package / "Manifest2.json")
    elif change == "empty folder":
        (package / "Weights").mkdir()
    else:
        (package / "Data" / "link").symlink_to(tmp_path / "model.onnx")
    problems = edgeml.verify(tmp_path).problems
    assert len(problems) == 1 and problems[0].startswith("model.pkgdir: "), problems


def test_a_file_where_the_folder_goes_is_refused_before_export(folder_backend, tmp_path):
    (tmp_path / "model.pkgdir").write_text("not a folder")
    with pytest.raises(InputError, match="not a folder"):
        _convert(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pkgdir"]


def test_a_folder_artifact_is_removed_with_its_entry(copy):
    tmp_path = copy
    remove_artifact(tmp_path / "model.pkgdir")
    assert not (tmp_path / "model.pkgdir").exists()
    assert [e["file"] for e in json.loads((tmp_path / MANIFEST_NAME).read_text())["artifacts"]] == ["model.onnx"]
    assert edgeml.verify(tmp_path).ok


def test_edgeml_load_opens_a_folder_artifact_on_its_backend(built):
    tmp_path = built[1]
    x = np.ones((3, 4), np.float32)
    with edgeml.load(tmp_path / "model.pkgdir") as package, edgeml.load(tmp_path / "model.onnx") as onnx:
        np.testing.assert_allclose(package.run({"x": x})[package.output_names[0]], onnx.run({"x": x})[onnx.output_names[0]])
