"""The manifest never lies: concurrent writers keep every entry, every state a kill could leave lists only
files present with their sha256, kills' temporaries are swept, and ``edgeml.verify`` says what is wrong.

The models are ONNX graphs built with onnx.helper (no export), so each conversion takes a moment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import edgeml
from edgeml import files, manifest
from edgeml.errors import InputError
from edgeml.verification import verify


def mlp_onnx(path: Path, seed: int, batch="batch") -> Path:
    """x[batch, 32] -> MatMul -> Relu -> MatMul -> y[batch, 10], random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) / 4, name)
               for name, shape in (("w1", (32, 64)), ("w2", (64, 10)))]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def listed_files_are_true(folder: Path) -> list[str]:
    """What the manifest says that is not so: listed files missing or with another sha256."""
    if not (folder / manifest.MANIFEST_NAME).exists():
        return []
    lies = []
    for entry in manifest.read_manifest(folder)["artifacts"]:
        path = folder / entry["file"]
        if not path.is_file():
            lies.append(f"{entry['file']} listed but missing")
        elif files.sha256(path) != entry["sha256"]:
            lies.append(f"{entry['file']} listed with another sha256")
    return lies


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    return [mlp_onnx(folder / f"mlp{seed}.onnx", seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    """A folder holding one checked conversion (model.onnx and model.int8.onnx) and its manifest."""
    folder = tmp_path_factory.mktemp("built")
    edgeml.convert(sources[0], "onnx", folder, name="model", int8=True)
    return folder


@pytest.fixture
def folder(built, tmp_path):
    copy = tmp_path / "build"
    shutil.copytree(built, copy)
    return copy


# -- the lock -----------------------------------------------------------------------------------------


def _install_many(folder: Path, prefix: str, count: int, barrier: threading.Barrier):
    barrier.wait()
    for i in range(count):
        with files.temp_path(folder / f"{prefix}{i}.bin") as tmp:
            tmp.write_bytes(f"{prefix}{i}".encode())
            manifest.install(tmp, folder / f"{prefix}{i}.bin", {"file": f"{prefix}{i}.bin", "sha256": files.sha256(tmp)})


def test_concurrent_writers_keep_every_entry(tmp_path):
    writers, count = 4, 10
    barrier = threading.Barrier(writers)
    threads = [threading.Thread(target=_install_many, args=(tmp_path, f"w{w}-", count, barrier)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(e["file"] for e in manifest.read_manifest(tmp_path)["artifacts"])
    assert len(names) == writers * count and not listed_files_are_true(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no lock file, no temporaries


def test_the_lock_excludes_another_writer_until_released(tmp_path):
    done = threading.Event()

    def writer():
        with manifest.folder_lock(tmp_path):
            done.set()

    with manifest.folder_lock(tmp_path):
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(0.3)
        assert not done.is_set()  # it cannot get the lock while we hold it, however long we wait
    thread.join()
    assert done.is_set() and not (tmp_path / manifest.LOCK_NAME).exists()


def test_a_lock_file_left_by_a_kill_does_not_block(tmp_path):
    (tmp_path / manifest.LOCK_NAME).touch()  # a writer killed while holding the lock leaves it behind
    with manifest.folder_lock(tmp_path):
        pass
    assert not (tmp_path / manifest.LOCK_NAME).exists()


# -- the order of writes -------------------------------------------------------------------------------


def test_every_state_a_kill_could_leave_is_true(sources, folder, monkeypatch):
    """Rebuild model.onnx and model.int8.onnx from another source over a previous build, checking the folder
    after every rename and removal: those are the states a SIGKILL can leave."""
    states, lies = [], []
    real_replace, real_unlink = os.replace, os.unlink

    def observe(op):
        def wrapped(*args, **kwargs):
            op(*args, **kwargs)
            states.append(args[0])
            lies.extend(f"after {op.__name__}({Path(str(args[0])).name}): {lie}" for lie in listed_files_are_true(folder))
        return wrapped

    before = {e["file"]: e["sha256"] for e in manifest.read_manifest(folder)["artifacts"]}
    monkeypatch.setattr(os, "replace", observe(real_replace))
    monkeypatch.setattr(os, "unlink", observe(real_unlink))
    edgeml.convert(sources[1], "onnx", folder, name="model", int8=True)
    monkeypatch.undo()
    after = {e["file"]: e["sha256"] for e in manifest.read_manifest(folder)["artifacts"]}
    assert not lies, "\n".join(lies)
    assert len(states) >= 6 and after.keys() == before.keys() == {"model.onnx", "model.int8.onnx"}
    assert all(after[name] != before[name] for name in after)  # both were rebuilt
    assert verify(folder).ok


def test_a_failed_install_leaves_the_manifest_true_and_no_temporary(sources, folder, monkeypatch):
    def refuse(tmp, final):
        raise InputError(f"cannot write {final}")

    monkeypatch.setattr(manifest, "publish", refuse)
    with pytest.raises(InputError):
        edgeml.convert(sources[1], "onnx", folder, name="model")
    assert not listed_files_are_true(folder)
    assert [e["file"] for e in manifest.read_manifest(folder)["artifacts"]] == ["model.int8.onnx"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_temporaries_of_dead_processes_are_swept_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = files._HOST
    stale = tmp_path / f".model.onnx.{host}.{dead.pid}.abc123.tmp"
    stale_folder = tmp_path / f".model.int8.onnx.{host}.{dead.pid}.def456.tmp"
    live = tmp_path / f".model.onnx.{host}.{os.getpid()}.ghi789.tmp"
    elsewhere = tmp_path / f".model.onnx.otherhost.{dead.pid}.jkl012.tmp"
    foreign = tmp_path / ".notes.tmp"
    for path in (stale, live, elsewhere, foreign):
        path.write_bytes(b"partial")
    stale_folder.mkdir()
    (stale_folder / "model.int8.onnx").write_bytes(b"partial")
    assert files.stale_temps(tmp_path) == sorted([stale_folder, stale])
    files.write_bytes_atomic(tmp_path / "report.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name, foreign.name, "report.json"])


# -- corrupt manifests and targets that are not regular files ------------------------------------------


@pytest.mark.parametrize("content, said", [
    ("[]", "a JSON list"), ("{not json", "invalid JSON"), ('{"artifacts": [1, 2]}', "not a list of entries"),
    (b"\xff\xfe", "not UTF-8"), ("folder", "is a folder"),
])
def test_a_corrupt_manifest_is_refused_not_replaced(sources, tmp_path, content, said):
    path = tmp_path / manifest.MANIFEST_NAME
    if content == "folder":
        path.mkdir()
    else:
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(InputError, match=said) as error:
        edgeml.convert(sources[0], "onnx", tmp_path, name="model")
    assert "move it away" in str(error.value) or "is a folder" in str(error.value)
    assert not (tmp_path / "model.onnx").exists()
    assert path.is_dir() if content == "folder" else path.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_writers_refuse_targets_that_are_not_regular_files(tmp_path):
    fifo, folder, link = tmp_path / "fifo", tmp_path / "folder", tmp_path / "null"
    os.mkfifo(fifo)
    folder.mkdir()
    link.symlink_to(os.devnull)
    for target, kind in ((fifo, "FIFO"), (folder, "folder"), (link, "character device")):
        with pytest.raises(InputError, match=f"is a {kind}, not a regular file"):
            files.write_bytes_atomic(target, b"report")
    assert fifo.is_fifo() and folder.is_dir() and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "null"]
    files.write_bytes_atomic(tmp_path / "new.json", b"1")
    files.write_bytes_atomic(tmp_path / "new.json", b"2")
    assert (tmp_path / "new.json").read_bytes() == b"2"


def test_an_artifact_path_that_is_a_folder_is_refused_before_the_export(sources, tmp_path):
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(InputError, match="model.onnx is a folder"):
        edgeml.convert(sources[0], "onnx", tmp_path, name="model")


# -- verify --------------------------------------------------------------------------------------------


def _entries(folder: Path) -> list[dict]:
    return json.loads((folder / manifest.MANIFEST_NAME).read_text())["artifacts"]


def _rewrite(folder: Path, entries: list[dict]) -> None:
    document = json.loads((folder / manifest.MANIFEST_NAME).read_text())
    (folder / manifest.MANIFEST_NAME).write_text(json.dumps({**document, "artifacts": entries}))


def test_verify_passes_a_clean_folder(folder):
    result = verify(folder)
    assert result.ok and sorted(result.verified) == ["model.int8.onnx", "model.onnx"] and not result.notes
    assert "2 artifact(s)" in result.summary()


def test_verify_finds_each_kind_of_problem(folder):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / "model.int8.onnx").unlink()  # missing
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-1] ^= 1
    (folder / "model.onnx").write_bytes(data)  # same size, other bytes
    (folder / "extra.onnx").write_bytes(b"x")  # not listed
    garbage = folder / "garbage.onnx"
    garbage.write_bytes(b"not a model")  # listed with its true sha256, but not ONNX
    (folder / f".model.onnx.{files._HOST}.{dead.pid}.abc.tmp").write_bytes(b"")  # a kill's temporary
    (folder / ".model.onnx.q1w2e3r4.tmp").write_bytes(b"")  # an older edgeml's temporary
    (folder / f".other.onnx.{files._HOST}.{os.getpid()}.xyz.tmp").write_bytes(b"")  # a write in progress
    entries = _entries(folder)
    entries += [{**entries[0]}, {"file": "garbage.onnx", "sha256": files.sha256(garbage), "size_bytes": garbage.stat().st_size},
                {"file": "short.bin", "sha256": "0", "size_bytes": 5}]
    (folder / "short.bin").write_bytes(b"12")
    _rewrite(folder, entries)
    result = verify(folder)
    assert not result.ok
    expected = {
        "model.int8.onnx": "but missing", "model.onnx": "sha256 differs", "extra.onnx": "not in edgeml.json",
        "garbage.onnx": "not a valid ONNX model", f".model.onnx.{files._HOST}.{dead.pid}.abc.tmp": "which is gone",
        ".model.onnx.q1w2e3r4.tmp": "leftover temporary",
        "short.bin": "2 bytes, the manifest says 5",
    }
    for name, said in expected.items():
        assert any(p.startswith(f"{name}: ") and said in p for p in result.problems), (name, result.problems)
    assert any("listed twice" in p for p in result.problems)
    assert len(result.problems) == len(expected) + 1 and all("\n" not in p for p in result.problems)
    assert result.notes == [f".other.onnx.{files._HOST}.{os.getpid()}.xyz.tmp: being written by process "
                            f"{os.getpid()} on {files._HOST}"]


def test_verify_without_or_with_a_corrupt_manifest(folder, tmp_path):
    (folder / manifest.MANIFEST_NAME).write_text("[]")
    (problem,) = verify(folder).problems
    assert "not an edgeml manifest" in problem
    # an entry naming a path, not a file of the folder: not edgeml's (a convert would keep it listed)
    (folder / manifest.MANIFEST_NAME).write_text('{"artifacts": [{"file": "../outside.onnx", "sha256": "0"}]}')
    (problem,) = verify(folder).problems
    assert "not an edgeml manifest" in problem
    (folder / manifest.MANIFEST_NAME).unlink()
    (problem,) = verify(folder).problems
    assert problem.startswith("edgeml.json: missing")
    with pytest.raises(InputError, match="no such folder"):
        verify(tmp_path / "nowhere")
    with pytest.raises(InputError, match="not a folder"):
        verify(folder / "model.onnx")
