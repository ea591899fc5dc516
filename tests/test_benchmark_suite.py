"""The performance suite runs end to end (on its smallest PyTorch model) so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_suite_writes_results_and_table(tmp_path):
    process = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--models", "mlp",
                              "--out", str(tmp_path), "--no-readme"], capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["models"]) == {"mlp"}
    mlp = results["models"]["mlp"]
    assert set(mlp["latency"]["1"]) == {"baseline", "onnxruntime", "edgeml fp32", "edgeml int8"}
    assert mlp["accuracy"]["edgeml fp32"] > 0.9 and mlp["fresh_process"]["edgeml fp32"]["peak_rss_mb"] > 10
    assert results["startup"]["help_seconds"] > 0 and results["overhead"]["worst_us"] > 0
    assert any(t["target"].startswith("runtime wrapper overhead") for t in results["targets"])
    table = (tmp_path / "RESULTS.md").read_text()
    assert "| mlp | 1 | PyTorch eager |" in table and "| mlp | 64 | edgeml int8 |" in table
