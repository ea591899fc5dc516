"""Crafted files: code hidden in the safe formats never runs, and special files fail at once, on every path.

Each malicious file is real: it holds a pickle (or a skops call) that creates a marker file when it runs,
and a control test shows that the framework's own loader does run it. Every load path (edgeml.convert,
edgeml.load, edgeml.bench, the CLI's convert and bench) must refuse it with an EdgeMLError (the CLI: exit 2,
one line, no traceback), create no marker and write nothing to the output folder. FIFOs, links to
/dev/zero and folders given as files fail the same way, under a deadline instead of hanging.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sio = pytest.importorskip("skops.io")

from click.testing import CliRunner  # noqa: E402

import edgeml  # noqa: E402
from edgeml.cli import main  # noqa: E402
from edgeml.errors import EdgeMLError, UnsafeFormatError  # noqa: E402


class Payload:
    """Unpickling this creates ``marker``: the proof that code from a file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def torch_pickle(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    return buffer.getvalue()


class Lifted(torch.nn.Module):
    """A weight, a bias and a lifted constant: each kind of record a .pt2 archive holds."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) + torch.tensor([1.0, 2.0])


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("program") / "model.pt2"
    torch.export.save(torch.export.export(Lifted().eval(), (torch.randn(1, 4),)), path)
    return path


def rewrite_zip(source: Path, target: Path, change=lambda record, data: data, extra: dict | None = None) -> Path:
    """A copy of a torch archive (.pt2, TorchScript) with ``change(record, bytes)`` applied to each record
    (None drops it), and ``extra`` records added."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        prefix = archive.namelist()[0].split("/")[0] + "/"
        for info in archive.infolist():
            data = change(info.filename[len(prefix):], archive.read(info))
            if data is not None:
                out.writestr(info, data)
        for record, data in (extra or {}).items():
            out.writestr(prefix + record, data)
    return target


def pickled_entry(program: Path, config_record: str, folder: str, marker: Path):
    """A change marking the first entry of a weights/constants config ``use_pickle``, the payload in its place."""
    with zipfile.ZipFile(program) as archive:
        prefix = archive.namelist()[0].split("/")[0] + "/"
        config = json.loads(archive.read(prefix + config_record))
    entry = next(iter(config["config"].values()))
    entry["use_pickle"], target = True, folder + entry["path_name"]
    return lambda r, d: json.dumps(config).encode() if r == config_record else torch_pickle(marker) if r == target else d


def skops_call(path: Path, function: str, args: tuple) -> Path:
    """A .skops file whose object is ``function(*args)``, built by skops' ConstructorFromReduceNode."""
    module, _, name = function.rpartition(".")
    content = json.loads(zipfile.ZipFile(io.BytesIO(sio.dumps(args))).read("schema.json"))
    versions = {key: content.pop(key) for key in ("protocol", "_skops_version")}
    schema = {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode", "content": content,
              "__id__": 1, **versions}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    return path


def craft(program: Path, folder: Path, markers: Path) -> dict[str, tuple[Path, Path]]:
    """Every malicious file: name -> (file, the marker its code would create)."""
    folder.mkdir()
    markers.mkdir()
    m = {name: markers / name for name in ("sample_inputs", "weight", "constant", "runstring", "savetxt",
                                           "numpy_load", "pkl", "pth", "npy")}
    files = {
        "sample_inputs": rewrite_zip(program, folder / "sample_inputs.pt2", lambda r, d: (
            torch_pickle(m["sample_inputs"]) if r.startswith("data/sample_inputs/") else d)),
        "weight": rewrite_zip(program, folder / "weight.pt2",
                              pickled_entry(program, "data/weights/model_weights_config.json", "data/weights/", m["weight"])),
        "constant": rewrite_zip(program, folder / "constant.pt2",
                                pickled_entry(program, "data/constants/model_constants_config.json", "data/constants/", m["constant"])),
        "runstring": skops_call(folder / "runstring.skops", "numpy.testing._private.utils.runstring",
                                (f"open({str(m['runstring'])!r}, 'w')", {})),
        "savetxt": skops_call(folder / "savetxt.skops", "numpy.savetxt", (str(m["savetxt"]), [1.0, 2.0])),
    }
    np.save(folder / "companion.npy", np.array([Payload(m["numpy_load"])], dtype=object), allow_pickle=True)
    files["numpy_load"] = skops_call(folder / "numpy_load.skops", "numpy.load", (str(folder / "companion.npy"), None, True))
    (folder / "model.pkl").write_bytes(pickle.dumps(Payload(m["pkl"])))
    files["pkl"] = folder / "model.pkl"
    (folder / "model.pth").write_bytes(torch_pickle(m["pth"]))
    files["pth"] = folder / "model.pth"
    np.save(folder / "rows.npy", np.array([Payload(m["npy"])], dtype=object), allow_pickle=True)
    files["npy"] = folder / "rows.npy"
    return {name: (files[name], m[name]) for name in files}


@pytest.fixture(scope="module")
def crafted(program, tmp_path_factory):
    root = tmp_path_factory.mktemp("crafted")
    return craft(program, root / "files", root / "markers")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    """x (batch, 4) -> Relu: the smallest model every data path can run."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path_factory.mktemp("onnx") / "relu.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.fixture(scope="module")
def skops_model(tmp_path_factory) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("skops") / "logistic.skops"
    sio.dump(LogisticRegression(max_iter=300).fit(X, y), path)
    return path


@contextlib.contextmanager
def deadline(seconds: int = 60):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() or read() in the main thread."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def cli(*args) -> str:
    """Run the CLI in-process; it must fail cleanly: exit 2, its error in one last line, no traceback."""
    with deadline():
        result = CliRunner().invoke(main, [str(a) for a in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.exit_code == 2 and errors == lines[-1:] and "Traceback" not in result.output, (args, result.exit_code, result.output)
    return errors[0]


def api(call, *args, **kwargs) -> str:
    with deadline(), pytest.raises(EdgeMLError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def refused_everywhere(path: Path, out: Path) -> list[str]:
    """The error of every load path for ``path``; convert's output folder must stay empty."""
    messages = [
        api(edgeml.convert, path, output_dir=out),
        api(edgeml.load, path),
        api(edgeml.bench, path),
        cli("convert", path, "-o", out),
        cli("bench", path),
    ]
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    return messages


def test_the_crafted_files_run_code_when_loaded_as_their_frameworks_do(program, tmp_path):
    """The control: without edgeml's checks, each file does run its code (so the tests below can fail)."""
    files = craft(program, tmp_path / "files", tmp_path / "markers")
    naive = {
        "sample_inputs": torch.export.load, "weight": torch.export.load, "constant": torch.export.load,
        "runstring": lambda p: sio.load(p, trusted=sio.get_untrusted_types(file=p)),
        "savetxt": lambda p: sio.load(p, trusted=sio.get_untrusted_types(file=p)),
        "numpy_load": lambda p: sio.load(p, trusted=sio.get_untrusted_types(file=p)),
        "pkl": lambda p: pickle.loads(p.read_bytes()),
        "pth": lambda p: torch.load(p, weights_only=False),
        "npy": lambda p: np.load(p, allow_pickle=True),
    }
    for name, (path, marker) in files.items():
        with contextlib.suppress(Exception):
            naive[name](path)
        assert marker.exists(), f"{name}: the crafted file did not run its code"


@pytest.mark.parametrize("name", ["sample_inputs", "weight", "constant", "runstring", "savetxt", "numpy_load", "pkl", "pth"])
def test_no_code_runs_from_a_model_file_on_any_load_path(crafted, tmp_path, name):
    path, marker = crafted[name]
    for message in refused_everywhere(path, tmp_path / "build"):
        assert path.name in message and "--trust-pickle" in message, message
    assert not marker.exists()


def test_pt2_refusals_name_the_record(crafted):
    from edgeml.sources import load_source

    expected = {"sample_inputs": "pickled Python objects in record data/sample_inputs/model.pt",
                "weight": "a pickled weight 'fc.weight' (record data/weights/",
                "constant": "a pickled constant 'lifted_tensor_0' (record data/constants/"}
    for name, words in expected.items():
        with pytest.raises(UnsafeFormatError, match=r"\.pt2 holds " + words.replace("(", r"\(")):
            load_source(crafted[name][0])
    assert not any(crafted[name][1].exists() for name in expected)


def test_pt2_with_compiled_code_is_refused(program, tmp_path):
    """AOTInductor shared libraries inside an archive would be loaded (and run) by torch.export.load."""
    from edgeml.sources import load_source

    path = rewrite_zip(program, tmp_path / "aoti.pt2", extra={"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(UnsafeFormatError, match="AOTInductor compiled code"):
        load_source(path)


def test_a_real_program_still_loads(program):
    runtime = edgeml.load(program)
    x = np.ones((1, 4), np.float32)
    assert runtime(x).shape == (1, 2)


def test_skops_trusts_exact_names_only():
    from edgeml.sources.sklearn_source import SKOPS_HELPER_TYPES, trusted_types

    trusted = trusted_types()
    assert "sklearn.ensemble._forest.RandomForestClassifier" in trusted and SKOPS_HELPER_TYPES <= trusted
    assert not {"numpy.load", "numpy.savetxt", "numpy.testing._private.utils.runstring", "builtins.exec"} & trusted


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_skops_models_of_every_common_kind_still_load(tmp_path):
    """Trees, boosting, neighbours, networks, pipelines with columns: all load without --trust-pickle."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_iris
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, StackingClassifier
    from sklearn.feature_selection import SelectKBest
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from edgeml.sources.sklearn_source import load_skops

    X, y = load_iris(return_X_y=True)
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "kind": np.where(y == 1, "one", "other")})
    models = {
        "forest": RandomForestClassifier(5, random_state=0).fit(X, y),
        "hist": HistGradientBoostingClassifier(max_iter=2).fit(X, y),
        "knn": KNeighborsClassifier().fit(X, y),
        "mlp": MLPClassifier((8,), max_iter=3, random_state=0).fit(X, y),
        "stack": StackingClassifier([("lr", LogisticRegression(max_iter=300))], cv=2).fit(X, y),
        "pipeline": make_pipeline(SimpleImputer(), StandardScaler(), SelectKBest(k=2), LogisticRegression()).fit(X, y),
        "columns": make_pipeline(ColumnTransformer([("n", StandardScaler(), ["a", "b"]), ("c", OneHotEncoder(), ["kind"])]),
                                 LogisticRegression()).fit(frame, y),
    }
    for name, model in models.items():
        sio.dump(model, tmp_path / f"{name}.skops")
        loaded = load_skops(tmp_path / f"{name}.skops", trust_pickle=False)
        data = frame if name == "columns" else X
        assert (loaded.predict(data) == model.predict(data)).all(), name


def test_a_tree_that_loops_is_refused(tmp_path):
    """A trusted Tree holds raw node indices: one pointing back at its own node would never end predict."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    from edgeml.sources.sklearn_source import load_skops

    model = RandomForestClassifier(2, random_state=0).fit(*load_iris(return_X_y=True))
    tree = model.estimators_[1].tree_
    state = tree.__getstate__()
    state["nodes"] = state["nodes"].copy()
    state["nodes"]["left_child"][0] = 0
    tree.__setstate__(state)
    sio.dump(model, tmp_path / "loop.skops")
    with pytest.raises(EdgeMLError, match="loop.skops holds a damaged decision tree"):
        load_skops(tmp_path / "loop.skops", trust_pickle=False)


def test_pickled_arrays_are_refused_as_sample_data_and_calibration(crafted, onnx_model, skops_model, tmp_path):
    path, marker = crafted["npy"]
    out = tmp_path / "build"
    messages = [
        api(edgeml.convert, skops_model, output_dir=out, sample=path),
        cli("convert", skops_model, "--sample", path, "-o", out),
        api(edgeml.convert, onnx_model, output_dir=out, data=path),
        cli("convert", onnx_model, "--data", path, "-o", out),
        api(edgeml.bench, onnx_model, data=path),
        cli("bench", onnx_model, "--data", path),
        cli("convert", onnx_model, "--int8", "--calib", path, "-o", tmp_path / "int8"),
    ]
    assert all("rows.npy holds Python objects" in m for m in messages), messages
    assert not marker.exists() and (not out.exists() or not any(out.iterdir()))


def special_files(folder: Path, suffix: str) -> dict[str, Path]:
    """A link to /dev/zero, a FIFO and a folder, each named like a ``suffix`` file."""
    folder.mkdir(exist_ok=True)
    zero, fifo, directory = folder / f"zero{suffix}", folder / f"fifo{suffix}", folder / f"folder{suffix}"
    zero.symlink_to("/dev/zero")
    os.mkfifo(fifo)
    directory.mkdir()
    return {"a character device": zero, "a named pipe": fifo, "is a folder": directory}


@pytest.mark.parametrize("suffix", [".pt2", ".pth", ".pt", ".skops", ".pkl", ".onnx"])
def test_special_model_files_fail_at_once(tmp_path, suffix):
    for words, path in special_files(tmp_path / "files", suffix).items():
        out = tmp_path / "build"
        if words == "is a folder":  # the CLI's argument type refuses folders itself, as a usage error
            messages = [api(edgeml.convert, path, output_dir=out), api(edgeml.load, path), api(edgeml.bench, path)]
            assert not out.exists() or not any(out.iterdir())
        else:
            messages = refused_everywhere(path, out)
        assert all(words in m and path.name in m for m in messages), messages


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_special_data_files_fail_at_once(tmp_path, onnx_model, skops_model, suffix):
    out = tmp_path / "build"
    for words, path in special_files(tmp_path / "files", suffix).items():
        if words == "is a folder":
            continue  # a folder of arrays is valid data
        messages = [
            api(edgeml.convert, onnx_model, output_dir=out, data=path),
            cli("convert", onnx_model, "--data", path, "-o", out),
            api(edgeml.bench, onnx_model, data=path),
            cli("bench", onnx_model, "--data", path),
            cli("convert", onnx_model, "--int8", "--calib", path, "-o", tmp_path / "int8"),
        ]
        if suffix != ".npz":
            messages += [api(edgeml.convert, skops_model, output_dir=out, sample=path),
                         cli("convert", skops_model, "--sample", path, "-o", out)]
        assert all(words in m and path.name in m for m in messages), messages
        assert not out.exists() or not any(out.iterdir())


def test_damaged_files_end_in_one_line_errors(program, tmp_path):
    from edgeml.sources import load_source

    (tmp_path / "junk.pt2").write_bytes(b"not a zip at all")
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(program.read_bytes()[:-100])
    script = torch.jit.script(torch.nn.Linear(4, 2))
    torch.jit.save(script, tmp_path / "script.pt")
    rewrite_zip(tmp_path / "script.pt", tmp_path / "broken.pt",
                         lambda r, d: b"garbage (" if r.startswith("code/") and r.endswith(".py") else d)
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "weights.pth")
    cases = {
        "junk.pt2": ({}, "is not a readable torch.export archive"),
        "cut.pt2": ({}, "is not a readable torch.export archive"),
        "broken.pt": ({"inputs": ["x:1x4"]}, "is not a readable TorchScript file"),
        "weights.pth": ({"inputs": ["x:1x4"], "model_class": "builtins:int"}, "names <class 'int'>, not a torch.nn.Module class"),
    }
    for name, (options, words) in cases.items():
        with pytest.raises(EdgeMLError, match=words):
            load_source(tmp_path / name, **options)


def test_torch_logs_no_traceback_of_its_own(program, tmp_path):
    """torch.export.load logs a traceback for an archive it cannot read: edgeml's one-line error is enough."""
    from edgeml.sources import load_source

    (tmp_path / "junk.pt2").write_bytes(b"not a zip at all")
    without = rewrite_zip(program, tmp_path / "without.pt2", lambda r, d: None if r.startswith("data/sample_inputs/") else d)
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("torch.export")
    logger.addHandler(handler)
    try:
        for path in (tmp_path / "junk.pt2", without):
            with pytest.raises(EdgeMLError, match=f"{path.name} is not a readable torch.export archive"):
                load_source(path)
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]
