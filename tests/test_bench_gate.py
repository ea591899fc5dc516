"""The bench gate: statistics against hand-computed cases (block bounds, their median, the robust spread,
own time and descheduled calls), every option checked before anything is measured, every report
format, the exit codes and the pytest helper. No assertion depends on timing or on the machine's load."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml.cli import main
from edgeml.errors import InputError
from edgeml.latency import runner
from edgeml.latency.compare import judge_baseline, load_baseline, read_baseline
from edgeml.latency.reports import check_writable
from edgeml.latency.runner import BenchResult, Method, analyse, input_differences, noise_notes
from edgeml.latency.timing import timed_calls
from edgeml.latency.stats import (BLOCK_CONFIDENCE, BLOCKS, CONFIDENCE, block_gate, block_samples,
                                  conservative_percentile, descheduled, discardable, gate_samples, mann_whitney_greater,
                                  min_samples, nearest_rank, own_times, ratio_interval, spread)
from edgeml.testing import assert_latency

QUICK = Method(warmup_ms=0, warmup_runs=2, min_runs=10, min_seconds=0.1)
QUICK_FLAGS = ("--warmup-ms", "0", "--min-seconds", "0.1")


def _model(path, batch):
    """A tiny real model: one MatMul, built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("gate") / "tiny.onnx", "batch")


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("fixed") / "fixed.onnx", 1)


class Measured(Exception):
    """Raised by the timing loops in tests that must fail before anything is measured."""


@pytest.fixture
def no_measuring(monkeypatch):
    def measure(*args, **kwargs):
        raise Measured

    monkeypatch.setattr(runner, "warm_up", measure)
    monkeypatch.setattr(runner, "time_calls", measure)


def synthetic(samples_ms, budget_ms=None, percentile=90.0, cpu_ms=None, threads=None) -> BenchResult:
    """A BenchResult as bench() builds it, from given wall (and CPU) times: no timing involved."""
    wall = [int(round(v * 1e6)) for v in samples_ms]
    cpu = wall if cpu_ms is None else [int(round(v * 1e6)) for v in cpu_ms]
    analysis = analyse(wall, cpu, 1, percentile, "own")
    return BenchResult(artifact="build/m.onnx", backend="onnxruntime", device="cpu", batch=1, threads=threads,
                       load_ms=1.0, first_ms=1.0, warmup_runs=1, warmup_ms=1.0, percentile=percentile,
                       budget_ms=budget_ms, **analysis, environment={}, notes=noise_notes(analysis, threads),
                       samples_ns=wall, cpu_ns=cpu)


def binomial_cdf(n: int, q: float, t: int) -> float:
    return sum(math.comb(n, k) * q**k * (1 - q) ** (n - k) for k in range(t + 1))


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


def test_the_lowest_of_five_block_bounds_is_a_99_percent_bound():
    # The lowest of 5 bounds is below the truth when any one is: 1 - 0.998^5 = 1 - 0.99 on a steady machine.
    miss = 1 - BLOCK_CONFIDENCE**BLOCKS
    assert BLOCKS == 5 and round(BLOCK_CONFIDENCE, 5) == 0.99799 and miss == pytest.approx(1 - CONFIDENCE)


def test_block_samples_by_hand():
    # 100 samples: P(Bin(100, .1) <= 2) = 0.00194 <= 0.00201, so t = 2 and one sample is dropped; at 99,
    # P(... <= 2) = 0.00212 > 0.00201, t = 1 and the bound is the block's slowest.
    assert binomial_cdf(100, 0.1, 2) <= 1 - BLOCK_CONFIDENCE < binomial_cdf(99, 0.1, 2)
    c = BLOCK_CONFIDENCE
    assert block_samples(90) == 100 and discardable(100, 90, c) == 1 and discardable(99, 90, c) == 0
    assert block_samples(99) == 1035 and discardable(1035, 99, c) == 1 and discardable(1034, 99, c) == 0
    assert block_samples(100) == 1
    assert gate_samples(90) == 500 and gate_samples(99) == 5175 and gate_samples(100) == 1


def test_block_gate_by_hand():
    # 1..1000 in 5 blocks of 200. Per block P(Bin(200, .1) <= 8) = 0.0014 <= 0.002 < P(... <= 9) = 0.0035:
    # t = 8, 7 dropped, each bound is its block's 8th slowest; the lowest block is 1..200: 193.
    assert binomial_cdf(200, 0.1, 8) <= 1 - BLOCK_CONFIDENCE < binomial_cdf(200, 0.1, 9)
    gate = block_gate(np.arange(1, 1001), 90)
    assert gate["block_values"] == [193, 393, 593, 793, 993] and gate["value"] == 193
    assert gate["discarded"] == 7 and gate["block_calls"] == [200] * 5 and gate["enough"]
    assert gate["chosen_block"] == 0 and gate["confidence"] == CONFIDENCE


def test_bursts_slow_some_blocks_a_regression_slows_all():
    rng = np.random.default_rng(4)
    blocks = [rng.lognormal(0, 0.05, 200) for _ in range(5)]
    quiet = block_gate(np.concatenate(blocks), 90)["value"]
    four = block_gate(np.concatenate([b * (3 if i != 2 else 1) for i, b in enumerate(blocks)]), 90)
    slower = block_gate(np.concatenate([b * 1.3 for b in blocks]), 90)
    assert quiet < 1.2 and four["value"] == pytest.approx(quiet, rel=0.1) and four["chosen_block"] == 2
    assert slower["value"] == pytest.approx(1.3 * quiet, rel=0.1)
    assert conservative_percentile(np.sort(np.concatenate([b * (3 if i != 2 else 1)
                                                           for i, b in enumerate(blocks)])), 90)["value"] > 2.5


def test_too_few_samples_and_p100_say_what_they_gate():
    few = block_gate(np.arange(1, 51), 99)  # 5 blocks of 10: no bound on p99, nor over all 50: the slowest call
    assert not few["enough"] and few["block_values"] == [10, 20, 30, 40, 50] and few["value"] == 50
    assert few["pooled"] and not few["pooled_enough"]
    # 5 blocks of 200 are too few for p99 block bounds (1035 each); 1000 calls are enough for one bound over
    # all of them (662), which drops the slowest call.
    pooled = block_gate(np.arange(1, 1001), 99)
    assert pooled["pooled"] and pooled["pooled_enough"] and pooled["chosen_block"] is None
    assert pooled["value"] == conservative_percentile(np.arange(1, 1001), 99)["value"] > 990
    top = block_gate(np.arange(1, 51), 100)
    assert top["blocks"] == 1 and top["value"] == 50


def test_block_bound_holds_empirically():
    """Across 2000 synthetic steady runs, the lowest block bound is below the true p90 in about 1% of them
    (binomial: 20 expected; 35 is 3.4 standard deviations above)."""
    rng = np.random.default_rng(0)
    true_p90 = -np.log(0.1)  # exponential(1)
    below = sum(block_gate(rng.exponential(size=500), 90)["value"] < true_p90 for _ in range(2000))
    assert below <= 35


def test_spread_is_robust_to_stalls():
    assert spread(np.arange(1, 101)) == (75 - 25) / 50
    stalls = np.sort(np.concatenate([np.full(97, 1.0), [100.0, 200.0, 300.0]]))
    assert spread(stalls) == 0.0 and np.std(stalls) / np.mean(stalls) > 5  # the CoV says 500%+


def test_own_time_and_descheduled_by_hand():
    # 40 calls of 100 us wall that the runtime spends 1 us waiting in (cpu 99 us): base = 1 us. Call 7 was
    # off the CPU 401 us (cpu 99, wall 500): billed 99 + 1 = 100 us. Call 9 waited 5 us more than base:
    # jitter (< 10 us), it keeps its wall time.
    wall = np.full(40, 100_000)
    cpu = np.full(40, 99_000)
    wall[7], wall[9] = 500_000, 105_000
    own = own_times(wall, cpu)
    assert own[7] == 100_000 and own[9] == 105_000 and (np.delete(own, [7, 9]) == 100_000).all()
    assert descheduled(wall, own).tolist() == [i == 7 for i in range(40)]
    result = synthetic(wall / 1e6, cpu_ms=cpu / 1e6)
    assert result.descheduled == {"calls": 1, "share": 1 / 40, "lost_ms": 0.4}
    assert result.wall_stats["max_ms"] == 0.5 and result.stats["max_ms"] == 0.105


SCHEDSTAT = os.path.exists("/proc/thread-self/schedstat")


@pytest.mark.skipif(not SCHEDSTAT, reason="needs Linux's per-thread run-queue delay (/proc/thread-self/schedstat)")
def test_a_call_that_waits_on_its_own_keeps_its_wall_time():
    """Real clocks: a 100 ms sleep is the call's own latency (a blocking join looks the same), not other work's.
    On a busy machine the thread may wait a little for a CPU after waking, never for most of the sleep."""
    calls = iter([lambda: None] * 20 + [lambda: time.sleep(0.1)] + [lambda: None] * 20)
    wall, cpu = timed_calls(lambda: next(calls)(), 41)
    assert wall[20] >= 100_000_000 and cpu[20] >= 0.5 * wall[20]
    assert own_times(wall, cpu)[20] >= 0.5 * wall[20]


@pytest.mark.skipif(not SCHEDSTAT or not hasattr(os, "sched_setaffinity"), reason="needs Linux's run-queue delay")
def test_a_call_sharing_its_cpu_with_other_work_is_descheduled(tmp_path):
    """Real clocks: pinned to one CPU with a busy process beside it, a call of 100 ms of CPU work waits in the
    run queue for a good part of its wall time, and that wait is not billed to the call."""
    cpu_id = sorted(os.sched_getaffinity(0))[0]
    hog = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu_id}}})\nwhile True: pass"])
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu_id})
        time.sleep(0.2)  # the busy process is running on that CPU

        def busy_100ms():
            end = time.thread_time_ns() + 100_000_000
            while time.thread_time_ns() < end:
                pass

        wall, cpu = timed_calls(busy_100ms, 3)
    finally:
        os.sched_setaffinity(0, saved)
        hog.kill()
        hog.wait()
    assert all(w >= 100_000_000 for w in wall)
    assert sum(w - c for w, c in zip(wall, cpu)) > 0.2 * sum(wall)  # fair share: about half of it


# -- verdicts and notes from known samples --------------------------------------------------------


def test_verdict_says_what_was_gated_and_why():
    samples = np.random.default_rng(5).lognormal(np.log(2.0), 0.05, 1000)
    ok, over = synthetic(samples, budget_ms=10), synthetic(samples, budget_ms=1)
    assert ok.passed and over.passed is False
    assert ok.verdict().startswith(f"conservative p90 {ok.gated_ms:.3f} ms within budget 10 ms (lowest of 5 blocks' "
                                   "99.8% bounds on the p90 of own time, each its block's ")
    assert "a 99% upper bound on the run's quietest stretch" in ok.verdict() and "0.0% descheduled" in ok.verdict()
    assert over.verdict().startswith(f"conservative p90 {over.gated_ms:.3f} ms OVER budget 1 ms")
    few = synthetic(samples[:100], budget_ms=10, percentile=99)
    assert "the slowest of all 100 calls' own time: too few for a bound on p99, which needs 662 calls (or 5 " \
           "blocks of 1035 for the block rule)" in few.verdict()
    assert few.gated_ms == pytest.approx(samples[:100].max())
    pooled = synthetic(samples, budget_ms=10, percentile=99)
    assert "one 99% bound on the p99 of all 1000 calls' own time, their " in pooled.verdict()
    assert "too few calls for 5 block bounds, which need 1035 each" in pooled.verdict()
    assert "p100 has nothing to bound" in synthetic(samples, percentile=100).verdict()


def test_gate_passes_through_bursts_that_fail_the_pooled_bound_not_a_slower_model():
    quiet = np.random.default_rng(6).lognormal(np.log(1.0), 0.05, 1000)
    burst = np.concatenate([quiet[:200] * 3, quiet[200:400] * 3, quiet[400:600], quiet[600:] * 3])
    result = synthetic(burst, budget_ms=1.5)
    assert result.passed and conservative_percentile(np.sort(burst), 90)["value"] > 1.5
    assert any("the load changed during the run" in note for note in result.notes)
    assert not synthetic(quiet * 1.6, budget_ms=1.5).passed


def test_noise_flag_ignores_rare_stalls_and_reports_descheduling():
    quiet = np.random.default_rng(7).lognormal(np.log(1.0), 0.02, 1000)
    stalls = quiet.copy()
    stalls[::100] = 50.0  # 1% of calls stall for 50 ms: the CoV is huge, the spread is not
    assert synthetic(quiet).notes == [] and synthetic(stalls).stats["cov"] > 1 and synthetic(stalls).notes == []
    broad = synthetic(np.random.default_rng(8).lognormal(0, 0.5, 1000))
    assert any(note.startswith("noisy run") for note in broad.notes)
    wall = quiet.copy()
    wall[::10] += 5.0  # every 10th call lost 5 ms off the CPU
    off = synthetic(wall, cpu_ms=quiet)
    (note,) = off.notes
    assert note.startswith("descheduled in 10% of calls: 500.0 ms of other work") and "pin --threads 1" in note
    assert off.stats["p99_ms"] < 1.2 and off.wall_stats["p99_ms"] > 5
    assert "pin --threads" not in synthetic(wall, cpu_ms=quiet, threads=1).notes[0]


def test_input_differences_name_names_dtypes_and_shapes():
    from edgeml.spec import TensorSpec

    a = [TensorSpec("x", (1, 16), "float32")]
    assert input_differences(a, [TensorSpec("x", (1, 16), "float32")]) == ""
    for other in (TensorSpec("y", (1, 16), "float32"), TensorSpec("x", (1, 16), "float16"),
                  TensorSpec("x", (1, 8), "float32")):
        assert input_differences(a, [other]) == f"{a[0]} vs {other}"


# -- every option is checked before anything is measured -------------------------------------------


@pytest.mark.parametrize("options, words", [
    ({"batch": None}, "--batch must be a whole number at least 1, got None"),
    ({"batch": 0}, "--batch"),
    ({"batch": 1.5}, "--batch"),
    ({"batch": True}, "--batch"),
    ({"budget_ms": float("nan")}, "--budget-ms must be a finite number above 0, got nan"),
    ({"budget_ms": float("inf")}, "--budget-ms"),
    ({"budget_ms": 0}, "--budget-ms"),
    ({"percentile": float("nan")}, "--percentile"),
    ({"percentile": 0}, "--percentile"),
    ({"percentile": 100.5}, "--percentile"),
    ({"percentile": 1e-300}, "--percentile must be a finite number at least 1e-06"),
    ({"seed": -1}, "--seed must be a whole number at least 0, got -1"),
    ({"seed": 1.5}, "--seed"),
    ({"max_regression": float("nan")}, "--max-regression"),
    ({"max_regression": float("inf")}, "--max-regression"),
    ({"max_regression": -0.1}, "--max-regression"),
    ({"method": Method(warmup_ms=float("nan"))}, "--warmup-ms"),
    ({"method": Method(warmup_ms=float("inf"))}, "--warmup-ms"),
    ({"method": Method(warmup_ms=-1)}, "--warmup-ms"),
    ({"method": Method(warmup_runs=-1)}, "--warmup"),
    ({"method": Method(min_runs=0)}, "--runs"),
    ({"method": Method(min_runs=3_000_000)}, "--runs"),
    ({"method": Method(min_seconds=float("nan"))}, "--min-seconds"),
    ({"method": Method(min_seconds=5, max_seconds=1)}, "--min-seconds"),
    ({"method": Method(max_seconds=float("inf"))}, "--max-seconds"),
    ({"method": Method(clock="cpu")}, "--clock"),
    ({"baseline": {"results": []}, "against": "other.onnx"}, "not both"),
])
def test_bad_options_fail_before_loading_or_measuring(onnx_model, no_measuring, options, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(")):
        edgeml.bench(onnx_model, **options)


def test_empty_batch_list_and_bad_threads_fail_before_measuring(onnx_model, no_measuring):
    with pytest.raises(InputError, match="--batch and --threads need at least one value"):
        edgeml.bench_sweep(onnx_model, batches=[])
    with pytest.raises(InputError, match="threads must be at least 1"):
        edgeml.bench_sweep(onnx_model, batches=[1], threads=[1, 0])
    with pytest.raises(InputError, match="--batch must be"):
        edgeml.bench_sweep(onnx_model, batches=[1, None])


def test_sweep_checks_every_batch_against_the_model_first(fixed_model, no_measuring):
    with pytest.raises(InputError, match="fixed batch of 1, so --batch 8 cannot run"):
        edgeml.bench_sweep(fixed_model, batches=[1, 8])


def test_sweep_checks_every_point_of_the_baseline_first(onnx_model, no_measuring):
    entry = {"artifact": str(onnx_model), "batch": 1, "threads": None, "samples_ns": [1000, 1100, 1200]}
    with pytest.raises(InputError, match="no run of tiny.onnx at batch 8"):
        edgeml.bench_sweep(onnx_model, batches=[1, 8], baseline={"results": [entry]})


def test_against_a_model_with_other_inputs_warns_before_measuring(onnx_model, tmp_path, no_measuring):
    import onnx
    from onnx import TensorProto, helper

    other = tmp_path / "half.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["ids"], ["y"])], "other",
                              [helper.make_tensor_value_info("ids", TensorProto.FLOAT16, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 16])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(other))
    said = []
    with pytest.raises(Measured):
        edgeml.bench(onnx_model, against=other, progress=said.append)
    (warning,) = [s for s in said if s.startswith("warning:")]
    assert "take different inputs" in warning and "x:" in warning and "ids:" in warning and "float16" in warning
    said.clear()
    with pytest.raises(Measured):
        edgeml.bench(onnx_model, against=onnx_model, progress=said.append)
    assert not [s for s in said if s.startswith("warning:")]


def _entry(**changes):
    entry = {"artifact": "build/tiny.onnx", "batch": 1, "threads": None, "samples_ns": [1000, 1100, 1200],
             "cpu_ns": [900, 1000, 1100]}
    return {"results": [{**entry, **changes}]}


@pytest.mark.parametrize("document, words", [
    ([], "not an edgeml bench JSON file"),
    ([{"results": []}], "not an edgeml bench JSON file"),
    ({"results": 5}, "not an edgeml bench JSON file"),
    ({"results": [5]}, "not an edgeml bench JSON file"),
    ({"results": {"artifact": "tiny.onnx"}}, "not an edgeml bench JSON file"),
    ({"results": [{"artifact": 5, "batch": 1, "threads": None, "name": 7}]}, "no run of tiny.onnx"),
    (_entry(samples_ns="abc"), "samples_ns must be a list of positive times"),
    (_entry(samples_ns=[[1, 2]]), "samples_ns must be a list"),
    (_entry(samples_ns={"a": 1}), "samples_ns must be a list"),
    (_entry(samples_ns=[None]), "samples_ns must be a list"),
    (_entry(samples_ns=[True, False]), "samples_ns must be a list"),
    (_entry(samples_ns=[1.0, float("nan")]), "samples_ns must be a list"),
    (_entry(samples_ns=[0, 0, 0]), "samples_ns must be a list of positive times"),
    (_entry(samples_ns=[-5, 10, 10]), "samples_ns must be a list of positive times"),
    (_entry(samples_ns=[1e300, 1, 1]), "samples_ns must be a list"),
    (_entry(cpu_ns=[1, 2]), "cpu_ns has 2 values for 3 samples_ns"),
    (_entry(cpu_ns=[-1, 2, 3]), "cpu_ns must be a list of non-negative times"),
    (_entry(samples_ns=[]), "no raw samples"),
    (_entry(environment="x"), "environment is not an object"),
    ({**_entry(), "environment": []}, "environment is not an object"),
])
def test_bad_baselines_are_input_errors(onnx_model, no_measuring, document, words):
    with pytest.raises(InputError, match=words):
        load_baseline(document, "tiny.onnx", 1, None)
    with pytest.raises(InputError, match=words):
        edgeml.bench(onnx_model, baseline=document)


def test_baseline_files_that_are_not_regular_json_files(onnx_model, tmp_path, no_measuring):
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(InputError, match="not an edgeml bench JSON file"):
        load_baseline(listing, "tiny.onnx", 1, None)
    with pytest.raises(InputError, match=f"{listing} is not an edgeml bench JSON file"):
        edgeml.bench_sweep(onnx_model, batches=[1, 2], baseline=listing)
    with pytest.raises(InputError, match="not a regular file"):
        read_baseline(tmp_path)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):  # opening it would wait for a writer forever
        read_baseline(fifo)
    with pytest.raises(InputError, match="no such baseline file"):
        read_baseline(tmp_path / "missing.json")


def test_report_paths_that_cannot_be_written_are_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo, "/dev/null"):
        with pytest.raises(InputError, match="not a regular file"):
            check_writable(None, path)
    with pytest.raises(InputError, match="does not exist"):
        check_writable(tmp_path / "no" / "such.json")
    check_writable(tmp_path / "new.json", None)


@pytest.mark.parametrize("flags, words", [
    (("--batch", ""), "--batch"),
    (("--warmup-ms", "nan"), "--warmup-ms"),
    (("--warmup-ms", "inf"), "--warmup-ms"),
    (("--seed", "-1"), "--seed"),
    (("--budget-ms", "nan"), "--budget-ms"),
    (("--max-regression", "nan"), "--max-regression"),
])
def test_cli_passes_bad_values_to_the_api_which_refuses_them(onnx_model, no_measuring, flags, words):
    out = CliRunner().invoke(main, ["bench", str(onnx_model), *flags])
    assert out.exit_code == 2 and words in out.output and "Traceback" not in out.output, out.output


def test_cli_refuses_a_fifo_as_report_path(onnx_model, tmp_path, no_measuring):
    os.mkfifo(tmp_path / "fifo")
    out = CliRunner().invoke(main, ["bench", str(onnx_model), "--json", str(tmp_path / "fifo")])
    assert out.exit_code == 2 and "is a FIFO, not a regular file" in out.output


# -- the comparisons ------------------------------------------------------------------------------


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
    base = {"samples_ns": rng.normal(1e6, 2e4, 700), "cpu_ns": None}
    small = judge_baseline(rng.normal(1.03e6, 2e4, 700), None, base, 0.10, "wall")
    big = judge_baseline(rng.normal(1.2e6, 2e4, 700), None, base, 0.10, "wall")
    noisy = judge_baseline(rng.normal(1.2e6, 2e6, 5), None, base, 0.10, "wall")
    assert small["significant"] and not small["regressed"]
    assert big["regressed"] and big["slowdown"] == pytest.approx(0.2, abs=0.01)
    assert not noisy["significant"] or not noisy["regressed"]


def test_regression_compares_own_times_when_both_runs_have_them():
    cpu = np.full(700, 1_000_000)
    loaded = cpu.copy()
    loaded[::2] += 3_000_000  # half the calls descheduled for 3 ms: the wall p50 is 2.5x, the model is not
    base = {"samples_ns": cpu, "cpu_ns": cpu}
    own = judge_baseline(loaded, cpu, base, 0.10, "own")
    assert own["clock"] == "own" and not own["regressed"] and "p50 of own time" in own["summary"]
    wall = judge_baseline(loaded, cpu, {"samples_ns": cpu, "cpu_ns": None}, 0.10, "own")
    assert wall["clock"] == "wall" and wall["regressed"]


def test_ratio_interval_brackets_the_true_ratio():
    rng = np.random.default_rng(3)
    median, low, high = ratio_interval(rng.normal(0.8, 0.02, 40))
    assert low < 0.8 < high and low <= median <= high


# -- the API, reports and exit codes on a real model (structure only, never timing) ----------------


def test_bench_result_fields_and_fingerprint(onnx_model):
    result = edgeml.bench(onnx_model, budget_ms=1000, batch=2, method=QUICK)
    g = result.gate
    assert result.percentile == 90 and result.clock == "own" and result.passed
    assert result.stats["count"] >= 5 * 100 and g["blocks"] == 5 and sum(g["block_calls"]) == result.stats["count"]
    assert result.gated_ms == min(g["block_values_ms"]) and g["enough"]
    assert len(result.samples_ns) == len(result.cpu_ns) == result.stats["count"] == result.wall_stats["count"]
    assert all(w >= o for w, o in zip(result.samples_ns, result.gated_samples_ns))
    env = result.environment
    assert env["cores"] >= 1 and env["backend_versions"]["onnxruntime"] and isinstance(env["isa"], list)
    assert result.warmup_runs >= 2 and result.load_ms > 0


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
    assert document["edgeml_bench"] == 2 and "samples_ns" not in document["results"][0]
    assert {"gate", "wall_stats", "descheduled", "clock"} <= set(document["results"][0])
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
    runner_ = CliRunner()
    base = tmp_path / "main.json"
    first = runner_.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--json", str(base), "--save-samples"])
    assert first.exit_code == 0, first.output
    saved = json.loads(base.read_text())["results"][0]
    assert len(saved["samples_ns"]) == len(saved["cpu_ns"]) > 0
    again = runner_.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--baseline", str(base),
                                  "--max-regression", "1000000%"])  # a limit no load can cross
    assert again.exit_code == 0, again.output
    assert "vs baseline: p50 of own time" in again.output
    bare = tmp_path / "bare.json"
    runner_.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--json", str(bare)])
    missing = runner_.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--baseline", str(bare)])
    assert missing.exit_code == 2 and "--save-samples" in missing.output
    other = runner_.invoke(main, ["bench", str(onnx_model), *QUICK_FLAGS, "--batch", "2", "--baseline", str(base)])
    assert other.exit_code == 2 and "no run of tiny.onnx at batch 2" in other.output


def test_a_slower_run_against_its_baseline_fails(onnx_model):
    fast = edgeml.bench(onnx_model, method=QUICK)
    # a baseline 10x faster: a busy machine cannot make the second run that much faster than the first
    tenth = {"samples_ns": [s // 10 + 1 for s in fast.samples_ns], "cpu_ns": [c // 10 for c in fast.cpu_ns]}
    baseline = {"results": [fast.to_dict(samples=True) | tenth], "environment": fast.environment}
    result = edgeml.bench(onnx_model, method=QUICK, baseline=baseline, max_regression=0.10)
    assert result.regressed and result.passed is False and "REGRESSION" in result.verdict()


def test_against_reports_a_ratio_with_its_interval(onnx_model):
    result = edgeml.bench(onnx_model, method=QUICK, against=onnx_model)
    c = result.comparison
    assert c["kind"] == "against" and c["blocks"] >= 10 and c["ci_low"] <= c["ratio"] <= c["ci_high"]
    assert len(result.samples_ns) == len(result.cpu_ns) == result.stats["count"]


def test_assert_latency_passes_and_fails(onnx_model):
    result = assert_latency(onnx_model, budget_ms=1000, method=QUICK)
    assert result.passed and result.percentile == 90
    with pytest.raises(AssertionError, match="OVER budget"):
        assert_latency(onnx_model, budget_ms=1e-6, percentile=99, method=QUICK)
