"""User-caused errors: each one exits with the right code, says what is wrong and how to fix it on ONE line
starting with ``error:``, shows no traceback, and leaves nothing half-written behind.

Exit codes (edgeml/cli.py): 2 bad usage or input, 1 a failed check or gate, 3 a missing backend.
Most cases run the CLI in-process with click's CliRunner (fast); a few run the installed ``edgeml`` script.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")
from click.testing import CliRunner  # noqa: E402

import edgeml  # noqa: E402
from edgeml.cli import main  # noqa: E402
from edgeml.errors import BackendMissing, EdgeMLError, InputError, SpecError, UnsafeFormatError  # noqa: E402

nn = torch.nn
ROOT = Path(__file__).resolve().parents[1]
EDGEML_BIN = Path(sys.executable).with_name("edgeml")
TWO_LAYER = "tests.conftest:TwoLayer"


def _two_layer_class():
    """tests.conftest:TwoLayer, imported under the name the CLI imports it by (--model-class)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("tests.conftest").TwoLayer


# -- helpers ------------------------------------------------------------------------------------------


def cli(*args: str):
    """Run ``edgeml ARGS`` in-process; returns (exit code, stdout+stderr)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    # CliRunner catches what escapes the command: only a SystemExit (ctx.exit/sys.exit) is expected.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {result.exception!r}\n{result.output}"
    )
    return result.exit_code, result.output


def error_line(output: str) -> str:
    """The one ``error:`` line of a failed command; asserts there is exactly one and no traceback."""
    assert "Traceback" not in output, output
    assert "internal error" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one 'error:' line, got {len(errors)}:\n{output}"
    lines = [line for line in output.splitlines() if line.strip()]
    # The error is the last thing said: a message is one line, not continued below.
    assert lines[-1] == errors[0], f"the error message continues past its line:\n{output}"
    return errors[0]


def fails(code: int, *args: str) -> str:
    """Run the CLI, assert exit ``code`` and a clean one-line error; returns that line."""
    exit_code, output = cli(*args)
    assert exit_code == code, f"exit {exit_code}, expected {code}:\n{output}"
    return error_line(output)


def assert_nothing_written(folder: Path) -> None:
    """No artifact, manifest or temporary file in ``folder`` (which may not exist at all)."""
    if not folder.exists():
        return
    left = sorted(p.name for p in folder.rglob("*"))
    assert not any(n.endswith((".onnx", ".tmp", ".json")) for n in left), f"left behind in {folder}: {left}"
    assert left == [], f"left behind in {folder}: {left}"


def has(line: str, *words: str) -> None:
    low = line.lower()
    missing = [w for w in words if w.lower() not in low]
    assert not missing, f"{missing} not in: {line}"


# -- models and files, built once -----------------------------------------------------------------

EIG_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class EigNet(nn.Module):
        # torch.linalg.eigvals: complex output, no ONNX op for either exporter
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return torch.linalg.eigvals(self.fc(x)).real
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    TwoLayer = _two_layer_class()
    torch.manual_seed(0)
    two = TwoLayer().eval()
    paths = {"dir": d}

    paths["state"] = d / "two.pt"
    torch.save(two.state_dict(), paths["state"])
    paths["whole"] = d / "whole.pt"
    torch.save(two, paths["whole"])
    paths["other_state"] = d / "seq.pt"
    torch.save(nn.Sequential(nn.Linear(20, 5), nn.ReLU(), nn.Linear(5, 3)).state_dict(), paths["other_state"])

    # An importable module with a network no exporter can handle, and its weights.
    (d / "edgeml_badops.py").write_text(EIG_MODULE)
    sys.path.insert(0, str(d))
    try:
        eig = importlib.import_module("edgeml_badops").EigNet()
    finally:
        sys.path.remove(str(d))
    paths["eig_state"] = d / "eig.pt"
    torch.save(eig.state_dict(), paths["eig_state"])

    # scikit-learn: a small fitted LogisticRegression on breast cancer, as .joblib and .pkl.
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    X, y = load_breast_cancer(return_X_y=True)
    logreg = LogisticRegression(max_iter=5000).fit(X.astype(np.float32), y)
    paths["joblib"] = d / "logreg.joblib"
    joblib.dump(logreg, paths["joblib"])
    paths["pkl"] = d / "logreg.pkl"
    joblib.dump(logreg, paths["pkl"])

    # A good ONNX file with a fixed batch of 1 (x:1x20), and two broken ones.
    result = edgeml.convert(two, "onnx", d / "good", inputs=["x:1x20"], name="two")
    paths["onnx"] = result.onnx
    data = paths["onnx"].read_bytes()
    paths["half_onnx"] = d / "half.onnx"
    paths["half_onnx"].write_bytes(data[: len(data) // 2])
    paths["random_onnx"] = d / "random.onnx"
    paths["random_onnx"].write_bytes(np.random.default_rng(0).bytes(512))

    paths["xyz"] = d / "model.xyz"
    paths["xyz"].write_bytes(b"not a model")
    return paths


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "build"


@pytest.fixture
def at_root(monkeypatch):
    """--model-class tests.conftest:TwoLayer is imported from the current folder."""
    monkeypatch.chdir(ROOT)


# -- 1. missing model file ------------------------------------------------------------------------


def test_convert_missing_file(tmp_path, out):
    line = fails(2, "convert", tmp_path / "nope.pt", "-o", out)
    has(line, "no such", "file", "nope.pt")
    assert_nothing_written(out)


@pytest.mark.parametrize("command", ["bench", "inspect"])
def test_bench_inspect_missing_file(command, tmp_path):
    line = fails(2, command, tmp_path / "nope.onnx")
    has(line, "no such", "file", "nope.onnx")


def test_api_missing_file(tmp_path, out):
    with pytest.raises(InputError, match="no such .*file"):
        edgeml.load(tmp_path / "nope.onnx")
    with pytest.raises(InputError, match="no such .*file"):
        edgeml.convert(tmp_path / "nope.pt", "onnx", out)
    assert_nothing_written(out)


@pytest.mark.skipif(not EDGEML_BIN.is_file(), reason="no edgeml script beside this Python")
def test_installed_script_missing_file(tmp_path):
    """The real entry point: the error on stderr, one line, exit 2."""
    proc = subprocess.run([str(EDGEML_BIN), "convert", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc.stderr)
    has(line, "no such", "file", "nope.pt")
    assert "error:" not in proc.stdout
    assert not (tmp_path / "b").exists()


# -- 2. unknown suffix ----------------------------------------------------------------------------


def test_convert_unknown_suffix(files, out):
    line = fails(2, "convert", files["xyz"], "-o", out)
    has(line, ".xyz", "suffix", ".onnx", ".pt2", ".skops")  # names the problem and what edgeml reads
    assert_nothing_written(out)


def test_bench_unknown_suffix(files):
    has(fails(2, "bench", files["xyz"]), ".xyz", ".onnx")


def test_inspect_unknown_suffix(files):
    has(fails(2, "inspect", files["xyz"]), "model.xyz", ".onnx", "edgeml convert")


def test_api_unknown_suffix(files, out):
    with pytest.raises(InputError, match=r"\.xyz"):
        edgeml.convert(files["xyz"], "onnx", out)
    with pytest.raises(InputError, match=r"\.xyz"):
        edgeml.load(files["xyz"])
    assert_nothing_written(out)


# -- 3. corrupt / truncated ONNX ------------------------------------------------------------------

BROKEN = ["half_onnx", "random_onnx"]


@pytest.mark.parametrize("which", BROKEN)
def test_convert_corrupt_onnx(files, which, out):
    line = fails(2, "convert", files[which], "-o", out)
    has(line, files[which].name, "not a valid onnx", "corrupt", "re-export")
    assert_nothing_written(out)


@pytest.mark.parametrize("which", BROKEN)
def test_bench_corrupt_onnx(files, which):
    has(fails(2, "bench", files[which]), files[which].name, "onnx", "corrupt", "re-export")


@pytest.mark.parametrize("which", BROKEN)
def test_inspect_corrupt_onnx(files, which):
    has(fails(2, "inspect", files[which]), files[which].name, "not a valid onnx", "corrupt")


@pytest.mark.parametrize("which", BROKEN)
def test_api_load_corrupt_onnx(files, which, out):
    with pytest.raises(InputError, match="corrupt") as info:
        edgeml.load(files[which])
    assert files[which].name in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="corrupt"):
        edgeml.convert(files[which], "onnx", out)
    assert_nothing_written(out)


# -- 4. pickles need --trust-pickle ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["joblib", "pkl"])
def test_pickle_refused_without_trust(files, which, out):
    line = fails(2, "convert", files[which], "--input", "X:1x30", "-o", out)
    has(line, files[which].name, "pickle", "runs", "code", "--trust-pickle")
    assert_nothing_written(out)


def test_pickle_refused_api(files, out):
    with pytest.raises(UnsafeFormatError, match="trust"):
        edgeml.convert(files["joblib"], "onnx", out, inputs=["X:1x30"])
    with pytest.raises(UnsafeFormatError):
        edgeml.load(files["pkl"])
    assert_nothing_written(out)


def test_pickle_converts_with_trust(files, out):
    code, output = cli("convert", files["joblib"], "--trust-pickle", "--input", "X:1x30", "-o", out)
    assert code == 0, output
    assert "error:" not in output
    assert (out / "logreg.onnx").is_file()
    manifest = json.loads((out / "edgeml.json").read_text())
    assert manifest["artifacts"][0]["check"]["status"] == "passed"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


# -- 5. a whole pickled nn.Module -----------------------------------------------------------------


def test_whole_torch_module_refused(files, out, at_root):
    line = fails(2, "convert", files["whole"], "--input", "x:1x20", "-o", out)
    has(line, "whole.pt", "pickle", "code", "--trust-pickle", "state_dict")
    assert_nothing_written(out)


def test_whole_torch_module_refused_api(files, out):
    with pytest.raises(UnsafeFormatError, match="--trust-pickle"):
        edgeml.convert(files["whole"], "onnx", out, inputs=["x:1x20"])
    assert_nothing_written(out)


# -- 6. state dicts and --model-class -------------------------------------------------------------


def test_state_dict_without_model_class(files, out):
    line = fails(2, "convert", files["state"], "--input", "x:1x20", "-o", out)
    has(line, "two.pt", "state dict", "--model-class")
    assert_nothing_written(out)


def test_model_class_not_importable(files, out, at_root):
    line = fails(2, "convert", files["state"], "--input", "x:1x20", "--model-class", "nosuch.module:Net", "-o", out)
    has(line, "cannot import", "nosuch", "--model-class", "install")
    assert_nothing_written(out)


def test_model_class_bad_form(files, out, at_root):
    line = fails(2, "convert", files["state"], "--input", "x:1x20", "--model-class", "justaname", "-o", out)
    has(line, "justaname", "--model-class", "module:Class")
    assert_nothing_written(out)


def test_model_class_missing_attribute(files, out, at_root):
    line = fails(2, "convert", files["state"], "--input", "x:1x20", "--model-class", "tests.conftest:NoSuchNet", "-o", out)
    has(line, "tests.conftest", "NoSuchNet", "--model-class")
    assert_nothing_written(out)


def test_state_dict_wrong_keys(files, out, at_root):
    line = fails(2, "convert", files["other_state"], "--input", "x:1x20", "--model-class", TWO_LAYER, "-o", out)
    has(line, "seq.pt", "does not fit", "TwoLayer", "missing keys", "fc1.weight", "unexpected keys", "0.weight",
        "--model-class")
    assert_nothing_written(out)


def test_state_dict_wrong_sizes(files, out, at_root):
    line = fails(2, "convert", files["state"], "--input", "x:1x20", "--model-class", TWO_LAYER,
                 "--model-kwargs", '{"hidden": 8}', "-o", out)
    has(line, "two.pt", "does not fit", "size mismatch", "fc1.weight", "--model-kwargs")
    assert_nothing_written(out)


def test_state_dict_wrong_keys_api(files, out, at_root):
    with pytest.raises(InputError, match="missing keys"):
        edgeml.convert(files["other_state"], "onnx", out, inputs=["x:1x20"], model_class=TWO_LAYER)
    assert_nothing_written(out)


def test_model_kwargs_not_an_object(files, out, at_root):
    line = fails(2, "convert", files["state"], "--input", "x:1x20", "--model-class", TWO_LAYER,
                 "--model-kwargs", "[1]", "-o", out)
    has(line, "--model-kwargs")
    assert_nothing_written(out)


# -- 7. bad --input strings -----------------------------------------------------------------------


@pytest.mark.parametrize("spec, words", [
    ("x", ["'x'", "NAME:DIMS"]),
    ("x:", ["'x:'", "NAME:DIMS"]),
    ("x:1x3:float99", ["float99", "dtype", "float32"]),
    ("x:0x3", ["'0'", "dimension", "NAME:DIMS"]),
])
def test_bad_input_spec(files, out, at_root, spec, words):
    line = fails(2, "convert", files["state"], "--input", spec, "--model-class", TWO_LAYER, "-o", out)
    has(line, "input spec", *words)
    assert_nothing_written(out)


@pytest.mark.parametrize("spec", [
    # "foo" parses as a symbolic dim (like "batch"); either way the model cannot take x:1x<anything but 20>.
    "x:1xfoo",
    "x:1x3",
])
def test_input_spec_that_does_not_fit_the_model(files, out, at_root, spec):
    line = fails(2, "convert", files["state"], "--input", spec, "--model-class", TWO_LAYER, "-o", out)
    has(line, "input")
    assert_nothing_written(out)


def test_bad_input_spec_api(out):
    with pytest.raises(SpecError, match="NAME:DIMS"):
        edgeml.convert(_two_layer_class()(), "onnx", out, inputs=["x:"])
    with pytest.raises(SpecError, match="float99"):
        edgeml.convert(_two_layer_class()(), "onnx", out, inputs=["x:1x20:float99"])
    assert_nothing_written(out)


# -- 8. an export that fails with both exporters --------------------------------------------------


def test_export_fails_with_both_exporters(files, out, monkeypatch):
    monkeypatch.chdir(files["dir"])  # edgeml_badops.py lives there
    line = fails(2, "convert", files["eig_state"], "--input", "x:1x3x3", "--model-class", "edgeml_badops:EigNet",
                 "-o", out)
    has(line, "cannot export", "EigNet", "dynamo", "TorchScript", "linalg_eig", "rewrite")
    assert_nothing_written(out)


def test_export_fails_api(files, out, monkeypatch):
    from edgeml.errors import ExportError

    monkeypatch.syspath_prepend(str(files["dir"]))
    model = importlib.import_module("edgeml_badops").EigNet().eval()
    with pytest.raises(ExportError, match="dynamo.*TorchScript"):
        edgeml.convert(model, "onnx", out, inputs=["x:1x3x3"])
    assert_nothing_written(out)


def test_export_failure_prints_nothing_but_the_error(files, out, monkeypatch, capfd):
    monkeypatch.chdir(files["dir"])
    capfd.readouterr()
    code, output = cli("convert", files["eig_state"], "--input", "x:1x3x3", "--model-class", "edgeml_badops:EigNet",
                       "-o", out)
    assert code == 2
    error_line(output)
    leaked = capfd.readouterr()
    assert leaked.err.strip() == "" and leaked.out.strip() == "", f"written past click:\n{leaked.err[:800]}"


# -- 9. no input spec -----------------------------------------------------------------------------


def test_state_dict_without_input_spec(files, out, at_root):
    line = fails(2, "convert", files["state"], "--model-class", TWO_LAYER, "-o", out)
    has(line, "TwoLayer", "input spec", "--input")
    assert_nothing_written(out)


def test_module_without_inputs_api(out):
    with pytest.raises(SpecError, match="--input") as info:
        edgeml.convert(_two_layer_class()(), "onnx", out)
    assert "TwoLayer" in str(info.value)
    assert_nothing_written(out)


# -- 10. wrong inputs at run time -----------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(files):
    with edgeml.load(files["onnx"]) as m:
        yield m


def test_runtime_wrong_name(runtime):
    with pytest.raises(InputError) as info:
        runtime.run({"y": np.zeros((1, 20), np.float32)})
    has(str(info.value), "'x'", "'y'", "missing", "unknown", "x:1×20:float32")


def test_runtime_wrong_rank(runtime):
    with pytest.raises(InputError) as info:
        runtime(np.zeros(20, np.float32))
    has(str(info.value), "'x'", "rank 2", "rank 1", "shape 1×20", "reshape")


def test_runtime_wrong_fixed_dim(runtime):
    with pytest.raises(InputError) as info:
        runtime.run({"x": np.zeros((1, 19), np.float32)})
    has(str(info.value), "'x'", "shape 1×20", "got 1×19", "axis 1")


def test_runtime_wrong_dtype(runtime):
    with pytest.raises(InputError) as info:
        runtime(np.zeros((1, 20), np.int32))
    has(str(info.value), "'x'", "float32", "int32", "astype")


def test_runtime_wrong_count(runtime):
    with pytest.raises(InputError, match="takes 1 input"):
        runtime(np.zeros((1, 20), np.float32), np.zeros((1, 20), np.float32))


def test_runtime_float64_is_cast(runtime):
    x = np.random.default_rng(1).standard_normal((1, 20))
    y64 = runtime(x)
    y32 = runtime(x.astype(np.float32))
    assert y64.dtype == np.float32
    np.testing.assert_array_equal(y64, y32)
    np.testing.assert_array_equal(runtime.run({"x": x})[runtime.output_names[0]], y32)


# -- 11. a failed check ---------------------------------------------------------------------------


def test_failed_check_writes_nothing(files, out):
    line = fails(1, "convert", files["joblib"], "--trust-pickle", "--input", "X:1x30", "--atol", "0", "--rtol", "0",
                 "-o", out)
    has(line, "logreg.onnx", "check failed", "atol 0", "nothing written", "--no-check")
    assert_nothing_written(out)


def test_failed_check_api(files, out):
    from edgeml.errors import CheckFailed

    with pytest.raises(CheckFailed) as info:
        edgeml.convert(files["joblib"], "onnx", out, inputs=["X:1x30"], trust_pickle=True, atol=0, rtol=0)
    assert info.value.exit_code == 1
    assert info.value.check is not None and not info.value.check.passed
    assert_nothing_written(out)


def test_no_check_writes_unverified(files, out):
    code, output = cli("convert", files["joblib"], "--trust-pickle", "--input", "X:1x30", "--atol", "0", "--rtol", "0",
                       "--no-check", "-o", out)
    assert code == 0, output
    assert "error:" not in output and "UNVERIFIED" in output
    assert (out / "logreg.onnx").is_file()
    manifest = json.loads((out / "edgeml.json").read_text())
    (artifact,) = manifest["artifacts"]
    assert artifact["file"] == "logreg.onnx"
    assert artifact["check"]["status"] == "unverified"
    assert sorted(p.name for p in out.iterdir()) == ["edgeml.json", "logreg.onnx"]


# -- 12. bench gates ------------------------------------------------------------------------------

QUICK = ("--runs", "5", "--warmup", "1", "--warmup-ms", "0", "--min-seconds", "0.05")


def test_bench_over_budget(files):
    code, output = cli("bench", files["onnx"], "--budget-ms", "0.000001", *QUICK)
    assert code == 1, output
    assert "FAIL" in output and "OVER" in output
    assert "Traceback" not in output


def test_bench_within_budget(files):
    code, output = cli("bench", files["onnx"], "--budget-ms", "1000000", *QUICK)
    assert code == 0, output
    assert "PASS" in output and "error:" not in output


def test_bench_batch_on_fixed_batch_model(files):
    line = fails(2, "bench", files["onnx"], "--batch", "4", *QUICK)
    has(line, "'x'", "fixed batch of 1", "--batch 4", "--dynamic-batch")


@pytest.mark.parametrize("args, words", [
    (("--budget-ms", "0"), ["--budget-ms", "above 0"]),
    (("--runs", "0"), ["--runs"]),
    (("--percentile", "0"), ["--percentile"]),
])
def test_bench_bad_options(files, args, words):
    has(fails(2, "bench", files["onnx"], *args), *words)


# -- 13. missing backend --------------------------------------------------------------------------

needs_cpu_ort = pytest.mark.skipif(
    "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
    reason="onnxruntime here has CUDA: --device cuda is not missing",
)


@needs_cpu_ort
def test_bench_cuda_on_cpu_onnxruntime(files):
    line = fails(3, "bench", files["onnx"], "--device", "cuda", *QUICK)
    has(line, "cuda", "CUDAExecutionProvider", "onnxruntime-gpu")


@needs_cpu_ort
def test_load_cuda_on_cpu_onnxruntime(files):
    with pytest.raises(BackendMissing, match="onnxruntime-gpu") as info:
        edgeml.load(files["onnx"], device="cuda")
    assert info.value.exit_code == 3
    assert isinstance(info.value, EdgeMLError)


def test_unknown_device(files):
    has(fails(2, "bench", files["onnx"], "--device", "tpu", *QUICK), "tpu", "cpu", "cuda")


# -- 14. more inputs a user gets wrong -----------------------------------------------------------


def test_name_with_folders_is_refused(files, out):
    line = fails(2, "convert", files["onnx"], "--name", "../escape", "-o", out)
    has(line, "--name", "plain file name")
    assert_nothing_written(out)


def test_inspect_empty_file(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    has(fails(2, "inspect", tmp_path / "empty.onnx"), "empty.onnx")


def test_input_spec_on_an_onnx_file(files, out):
    has(fails(2, "convert", files["onnx"], "--input", "x:1x20", "-o", out), "carries its own input specs")
    has(fails(2, "bench", files["onnx"], "--input", "x:1x20"), "source models only")


def test_sklearn_input_with_the_wrong_feature_count(files, out):
    line = fails(2, "convert", files["pkl"], "--trust-pickle", "--input", "X:1x31", "-o", out)
    has(line, "31 features", "fitted on 30", "X:1x30")
    assert_nothing_written(out)


def test_unwritable_output_folder(files, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    has(fails(2, "convert", files["onnx"], "-o", blocker / "build"), "cannot write", "output folder")


def test_negative_tolerance_and_threads(files, out):
    has(fails(2, "convert", files["onnx"], "--atol", "-1", "-o", out), "tolerances must be >= 0")
    has(fails(2, "bench", files["onnx"], "--threads", "0", *QUICK), "threads must be at least 1")


def test_bench_a_state_dict_with_its_class(files, at_root):
    code, output = cli("bench", files["state"], "--model-class", TWO_LAYER, "--input", "x:1x20", *QUICK)
    assert code == 0, output
    assert "torch/cpu" in output


def test_missing_framework_exits_3(tmp_path):
    """A base install without torch: the demo says which extra to install, exit 3."""
    script = "import sys; sys.modules['torch'] = None\nfrom edgeml.cli import main\nmain(['demo', '-o', sys.argv[1]])"
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "demo")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    has(error_line(proc.stderr), "torch", "pip install", "edgeml[torch]")
