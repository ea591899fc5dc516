"""The runtime path stays light, and the statistics are right on hand-computed cases."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import edgeml
from edgeml.latency.stats import nearest_rank, summarize
from edgeml.spec import TensorSpec, parse_spec

HEAVY = ("torch", "coremltools", "tensorrt", "sklearn", "skl2onnx", "onnxslim", "pandas", "onnx", "onnxruntime.tools",
         "onnxruntime.quantization")


def test_import_load_and_run_leave_heavy_frameworks_out(mlp, tmp_path):
    onnx_path = edgeml.convert(mlp, "onnx,ort", tmp_path, inputs=["x:1x64"]).onnx
    script = f"""
import sys, json, numpy as np
import edgeml
for path in ({str(onnx_path)!r}, {str(onnx_path.with_suffix(".ort"))!r}):
    model = edgeml.load(path)
    model(np.zeros((1, 64), np.float32))
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_bench_cli_on_onnx_leaves_heavy_frameworks_out(mlp, tmp_path):
    onnx_path = edgeml.convert(mlp, "onnx", tmp_path, inputs=["x:1x64"]).onnx
    script = f"""
import sys, json
from edgeml.cli import main
try:
    main(["bench", {str(onnx_path)!r}, "--runs", "5", "--min-seconds", "0.05", "--warmup-ms", "0"], standalone_mode=False)
finally:
    print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_nearest_rank_percentiles_by_hand():
    values = list(range(1, 11))  # 1..10
    assert nearest_rank(values, 50) == 5  # ceil(0.5 * 10) = 5th
    assert nearest_rank(values, 90) == 9
    assert nearest_rank(values, 95) == 10  # ceil(9.5) = 10th
    assert nearest_rank(values, 99) == 10
    assert nearest_rank(values, 10) == 1
    assert nearest_rank([7], 99) == 7
    with pytest.raises(ValueError):
        nearest_rank(values, 0)


def test_summary_in_milliseconds_with_throughput():
    samples_ns = [1_000_000 * v for v in (1, 2, 3, 4, 100)]
    s = summarize(samples_ns, batch=8)
    assert s["min_ms"] == 1 and s["max_ms"] == 100 and s["p50_ms"] == 3 and s["p99_ms"] == 100
    assert s["mean_ms"] == pytest.approx(22.0)
    assert s["std_ms"] == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1))
    assert s["throughput_per_s"] == pytest.approx(8 * 1000 / 22.0)


def test_spec_syntax_round_trips():
    spec = parse_spec("ids:batchx128:int64")
    assert spec == TensorSpec("ids", ("batch", 128), "int64") and str(spec) == "ids:batch×128:int64" and parse_spec(str(spec)) == spec
    assert parse_spec("x:1x3x224x224").dtype == "float32"
    assert parse_spec("x:1,3:fp16").shape == (1, 3) and parse_spec("x:1,3:fp16").dtype == "float16"
