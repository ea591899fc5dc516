"""The bench gate: statistics against hand-computed cases, the conservative estimate, the significance
test, every report format, the exit codes, and the pytest helper."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml.cli import main
from edgeml.latency.compare import judge_baseline
from edgeml.latency.runner import Method
from edgeml.latency.stats import (conservative_percentile, discardable, mann_whitney_greater, min_samples,
                                  nearest_rank, ratio_interval)
from edgeml.testing import assert_latency

QUICK = Method(warmup_ms=0, warmup_runs=2, min_runs=10, min_seconds=0.1)
QUICK_FLAGS = ("--warmup-ms", "0", "--min-seconds", "0.1")


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """A tiny real model: a Gemm, built with onnx.helper, with a dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path_factory.mktemp("gate")
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [weight])
    path = folder / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# -- statistics by hand ---------------------------------------------------------------------------


def test_nearest_rank_on_100_values():
    values = np.arange(1, 101)
    assert nearest_rank(values, 99) == 99 and nearest_rank(values, 99.9) == 100 and nearest_rank(values, 1) == 1


def test_minimum_samples_match_loadgen():
    assert min_samples(90) == 64 and min_samples(99) == 662 and min_samples(100) is None


def test_discarded_counts_match_loadgen_reports():
    # MLPerf LoadGen summaries: 2048 queries -> "Would discard 172", 659 -> 47, 7469 -> 685 (p90).
    assert [discardable(n, 90) for n in (2048, 659, 7469)] == [172, 47, 685]
    assert discardable(64, 90) == 0 and discardable(63, 90) == 0


def test_conservative_estimate_by_hand():
    # p90 of 1..1000: nearest rank 900. P(Bin(1000, 0.1) <= 78) = 0.00987 <= 0.01 < P(... <= 79) = 0.0133,
    # so t = 78; LoadGen drops t - 1 = 77 values and the estimate is the 923rd.
    values = np.arange(1, 1001)
    estimate = conservative_percentile(values, 90)
    assert estimate["enough"] and estimate["discarded"] == 77 and estimate["value"] == 923
    assert nearest_rank(values, 90) == 900 < estimate["value"]
    few = conservative_percentile(np.arange(1, 51), 90)
    assert not few["enough"] and few["value"] == 50 and few["min_samples"] == 64


def test_binomial_bound_holds_empirically():
    """Across 2000 synthetic runs, the estimate is below the true p99 in well under 1% of them."""
    rng = np.random.default_rng(0)
    true_p99 = -np.log(0.01)  # exponential(1)
    below = sum(conservative_percentile(np.sort(rng.exponential(size=1000)), 99)["value"] < true_p99
                for _ in range(2000))
    assert below / 2000 <= 0.01


def test_mann_whitney_with_and_without_a_shift():
    rng = np.random.default_rng(1)
    base = rng.lognormal(0, 0.1, 800)
    same = rng.lognormal(0, 0.1, 800)
    slower = rng.lognormal(np.log(1.05), 0.1, 800)
    assert mann_whitney_greater(same, base) > 0.05
    assert mann_whitney_greater(slower, base) < 1e-6
    assert mann_whitney_greater(base, slower) > 0.99
    # hand case: every current sample above every baseline one, 10 vs 10: U = 100, z ~ 3.74
    assert mann_whitney_greater(np.arange(11, 21), np.arange(1, 11)) == pytest.approx(9.0e-5, rel=0.1)


def test_regression_needs_size_and_significance():
    rng = np.random.default_rng(2)
    base = {"samples_ns": list(rng.normal(1e6, 2e4, 700))}
    small = judge_baseline(rng.normal(1.03e6, 2e4, 700), base, 0.10)
    big = judge_baseline(rng.normal(1.2e6, 2e4, 700), base, 0.10)
    noisy = judge_baseline(rng.normal(1.2e6, 2e6, 5), base, 0.10)
    assert small["significant"] and not small["regressed"]
    assert big["regressed"] and big["slowdown"] == pytest.approx(0.2, abs=0.01)
    assert not noisy["significant"] or not noisy["regressed"]


def test_ratio_interval_brackets_the_true_ratio():
    rng = np.random.default_rng(3)
    median, low, high = ratio_interval(rng.normal(0.8, 0.02, 40))
    assert low < 0.8 < high and low <= median <= high


# -- the API, reports and exit codes on a real model ------------------------------------------------


def test_bench_result_fields_and_fingerprint(onnx_model):
    result = edgeml.bench(onnx_model, budget_ms=1000, percentile=90, batch=2, method=QUICK)
    assert result.passed and result.stats["count"] >= 64 and result.conservative["enough"]
    assert result.stats["p90_ms"] <= result.gated_ms <= result.stats["max_ms"]
    env = result.environment
    assert env["cores"] >= 1 and env["backend_versions"]["onnxruntime"] and isinstance(env["isa"], list)
    assert result.warmup_runs >= 2 and result.load_ms > 0 and len(result.samples_ns) == result.stats["count"]


def test_sweep_json_junit_markdown_and_step_summary(onnx_model, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = CliRunner().invoke(main, ["bench", str(onnx_model), "--budget-ms", "1000", "--batch", "1,4", "--threads", "1",
                                    *QUICK_FLAGS, "--json", str(tmp_path / "b.json"), "--junit", str(tmp_path / "b.xml"),
                                    "--markdown", str(tmp_path / "b.md"), "--html", str(tmp_path / "b.html")])
    assert out.exit_code == 0, out.output
    document = json.loads((tmp_path / "b.json").read_text())
    assert document["passed"] is True and [r["batch"] for r in document["results"]] == [1, 4]
    assert "samples_ns" not in document["results"][0]
    suite = ET.parse(tmp_path / "b.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert suite.get("failures") == "0" and len(cases) == 2 and cases[1].get("name") == "tiny.onnx batch 4 threads 1"
    assert "within budget 1000 ms" in cases[0].find("system-out").text
    table = (tmp_path / "b.md").read_text()
    assert "| `tiny.onnx` | 4 | 1 |" in table and "✅ pass" in table
    assert summary.read_text().startswith("earlier step\n### edgeml bench")
    page = (tmp_path / "b.html").read_text()
    assert page.count("<svg") == 4 and "budget 1000 ms" in page


def test_failing_gate_exits_1_with_junit_failure(onnx_model, tmp_path):
    out = CliRunner().invoke(main, ["bench", str(onnx_model), "--budget-ms", "0.00001", *QUICK_FLAGS,
                                    "--junit", str(tmp_path / "b.xml")])
    assert out.exit_code == 1 and "FAIL" in out.output
    failure = ET.parse(tmp_path / "b.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None and "OVER budget 1e-05 ms" in failure.get("message")


def test_baseline_round_trip_and_its_errors(onnx_model, tmp_path):
    runner = CliRunner()
    base = tmp_path / "main.json"
    first = runner.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--json", str(base), "--save-samples"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--baseline", str(base), "--max-regression", "50%"])
    assert again.exit_code == 0, again.output
    assert "vs baseline" in again.output
    bare = tmp_path / "bare.json"
    runner.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--json", str(bare)])
    missing = runner.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--baseline", str(bare)])
    assert missing.exit_code == 2 and "--save-samples" in missing.output
    other = runner.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--batch", "2", "--baseline", str(base)])
    assert other.exit_code == 2 and "no run of tiny.onnx at batch 2" in other.output


def test_a_slower_run_against_its_baseline_fails(onnx_model, tmp_path):
    fast = edgeml.bench(onnx_model, method=QUICK)
    baseline = {"results": [fast.to_dict(samples=True) | {"samples_ns": [s // 3 for s in fast.samples_ns]}],
                "environment": fast.environment}
    result = edgeml.bench(onnx_model, method=QUICK, baseline=baseline, max_regression=0.10)
    assert result.regressed and result.passed is False and "REGRESSION" in result.verdict()


def test_against_reports_a_ratio_with_its_interval(onnx_model):
    result = edgeml.bench(onnx_model, method=QUICK, against=onnx_model)
    c = result.comparison
    assert c["kind"] == "against" and c["blocks"] >= 10 and c["ci_low"] <= c["ratio"] <= c["ci_high"]
    assert 0.7 < c["ratio"] < 1.4  # the same model on both sides


def test_assert_latency_passes_and_fails(onnx_model):
    result = assert_latency(onnx_model, budget_ms=1000, percentile=99, method=QUICK)
    assert result.passed
    with pytest.raises(AssertionError, match="OVER budget"):
        assert_latency(onnx_model, budget_ms=1e-6, method=QUICK)
