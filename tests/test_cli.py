"""The CLI end to end on real models: convert, inspect, bench (with its budget gate), demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeml.cli import main

from .conftest import torch


def edgeml_cli(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output + (result.stderr if hasattr(result, "stderr") and result.stderr_bytes else "")


@pytest.fixture(scope="module")
def mlp_onnx(mlp, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "mlp.pt2"
    torch.export.save(torch.export.export(mlp, (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},)), str(path))
    code, out = edgeml_cli("convert", path, "-o", folder / "build")
    assert code == 0, out
    assert "exported with torch.onnx dynamo" in out and "check passed" in out
    return folder / "build" / "mlp.onnx"


def test_convert_pt2_writes_onnx_and_manifest(mlp_onnx):
    manifest = json.loads((mlp_onnx.parent / "edgeml.json").read_text())
    assert manifest["artifacts"][0]["check"]["status"] == "passed"
    assert manifest["artifacts"][0]["source"]["format"] == "ExportedProgram (.pt2)"


def test_convert_random_forest_skops_with_a_csv_sample(forest, cancer, tmp_path):
    import numpy as np
    import skops.io

    _, X_test, _, _ = cancer
    skops.io.dump(forest, tmp_path / "forest.skops")
    np.savetxt(tmp_path / "rows.csv", X_test[:50], delimiter=",", header=",".join(f"f{i}" for i in range(30)), comments="")
    code, out = edgeml_cli("convert", tmp_path / "forest.skops", "--sample", tmp_path / "rows.csv", "-o", tmp_path / "build")
    assert code == 0, out
    assert "check passed on 50 samples (--sample rows" in out and "labels agree" in out
    assert (tmp_path / "build" / "forest.onnx").is_file()


def test_convert_trusted_pickle_with_input_spec(logreg, tmp_path):
    import joblib

    joblib.dump(logreg, tmp_path / "model.pkl")
    code, out = edgeml_cli("convert", tmp_path / "model.pkl", "--trust-pickle", "--input", "X:1x30", "-o", tmp_path / "build")
    assert code == 0, out
    assert "wrote" in out and (tmp_path / "build" / "model.onnx").is_file()


def test_inspect_shows_inputs_ops_and_precision(mlp_onnx):
    code, out = edgeml_cli("inspect", mlp_onnx)
    assert code == 0
    assert "input:" in out and "precision: fp32" in out and "Gemm" in out and "parameters:" in out
    code, out = edgeml_cli("inspect", mlp_onnx, "--json")
    info = json.loads(out)
    assert info["quantized"] is False and info["parameters"] > 10_000


QUICK = ("--warmup-ms", "0", "--min-seconds", "0.1")


def test_bench_within_budget_writes_json(mlp_onnx, tmp_path):
    code, out = edgeml_cli("bench", mlp_onnx, "--budget-ms", "1000", "--runs", "50", "--batch", "4", *QUICK,
                           "--json", tmp_path / "b.json")
    assert code == 0, out
    assert "PASS: mlp.onnx batch 4" in out and "within budget 1000 ms" in out
    document = json.loads((tmp_path / "b.json").read_text())
    data = document["results"][0]
    stats = data["stats"]
    assert document["passed"] is True and data["passed"] is True and data["batch"] == 4
    assert stats["count"] >= 500  # the p90 gate: 5 blocks of 100 calls
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert data["load_ms"] > 0 and data["first_ms"] > 0 and stats["throughput_per_s"] > 0


def test_bench_over_budget_exits_1(mlp_onnx):
    code, out = edgeml_cli("bench", mlp_onnx, "--budget-ms", "0.0001", "--runs", "20", "--percentile", "50", *QUICK)
    assert code == 1 and "FAIL: mlp.onnx" in out and "conservative p50" in out and "OVER budget" in out


def test_bench_runs_the_torch_source_too(mlp_onnx):
    code, out = edgeml_cli("bench", mlp_onnx.parent.parent / "mlp.pt2", "--runs", "20", *QUICK)
    assert code == 0, out
    assert "torch/cpu" in out


def test_help_teaches_each_command():
    for command in ("convert", "bench", "inspect", "demo"):
        code, out = edgeml_cli(command, "--help")
        assert code == 0 and "Usage:" in out
    code, out = edgeml_cli("--help")
    assert "Exit codes" in out


def test_demo_trains_converts_checks_and_benches(tmp_path):
    process = subprocess.run([sys.executable, "-m", "edgeml.cli", "demo", "-o", str(tmp_path)], capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    assert "PyTorch MLP" in process.stdout and "RandomForest" in process.stdout and "within" in process.stdout
    assert (tmp_path / "digits_mlp.onnx").is_file() and (tmp_path / "digits_rf.onnx").is_file()
    assert process.stderr.count("check passed") == 2


def test_a_closed_pipe_ends_quietly(mlp_onnx):
    """`edgeml inspect m.onnx | head -1`: the reader leaving early is not an error (exit 0, nothing on stderr)."""
    process = subprocess.Popen([sys.executable, "-m", "edgeml.cli", "inspect", str(mlp_onnx)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # before edgeml has written a byte: its first write meets a closed pipe
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert b"BrokenPipe" not in stderr and b"Traceback" not in stderr


def test_sweep_table_is_not_truncated_in_a_log(mlp_onnx):
    """Piped output (CI logs) has no width to fit: every header and cell is printed whole."""
    code, out = edgeml_cli("bench", mlp_onnx, "--batch", "1,2", "--threads", "1,2", "--runs", "10", *QUICK)
    assert code == 0, out
    assert "…" not in out
    for header in ("threads", "throughput", "verdict", "batch"):
        assert header in out


def test_verify_passes_a_built_folder_and_names_what_changed(mlp_onnx, tmp_path):
    import shutil

    folder = shutil.copytree(mlp_onnx.parent, tmp_path / "build")
    code, out = edgeml_cli("verify", folder)
    assert code == 0 and out.startswith("ok: ") and "1 artifact(s)" in out, out
    with open(folder / "mlp.onnx", "ab") as f:
        f.write(b"\0")  # one byte appended after the build
    (folder / "stray.onnx").write_bytes((folder / "mlp.onnx").read_bytes())
    code, out = edgeml_cli("verify", folder)
    assert code == 1, out
    assert "problem: mlp.onnx:" in out and "the manifest says" in out
    assert "problem: stray.onnx: not in edgeml.json" in out
    code, out = edgeml_cli("inspect", folder)
    assert code == 2 and "edgeml verify" in out


@pytest.mark.parametrize("closed", ["stdout", "both"])
def test_a_closed_pipe_keeps_the_verdict_and_the_reports(mlp_onnx, tmp_path, closed):
    """`edgeml bench ... | head -1` (or `2>&1 | head`): the gate still decides the exit code and the reports are
    written; a failed gate is not turned into a pass by a reader that left."""
    report = tmp_path / "bench.json"
    process = subprocess.Popen([sys.executable, "-m", "edgeml.cli", "bench", str(mlp_onnx), "--budget-ms", "0.000001",
                                "--percentile", "50", "--runs", "20", *QUICK, "--json", str(report)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE if closed == "both" else subprocess.DEVNULL)
    process.stdout.close()
    if closed == "both":
        process.stderr.close()
    assert process.wait(timeout=300) == 1
    assert json.loads(report.read_text())["passed"] is False
