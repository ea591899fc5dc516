"""Does the latency gate flap? The same artifact benched again and again on this machine.

1. Measure a small CNN (3x96x96, random weights, exported by edgeml) once, for its p50 and p99.
2. Bench it N times (default 10) with the budget at 1.5x that p99: every run must pass.
3. Bench it N times with the budget at 0.5x that p50: every run must fail.
4. The harness's own cost per iteration: the timing loop around an empty callable (target < 2 us).

    python benchmarks/gate_flap.py [--repeats 10] [--min-seconds 3] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeml
from edgeml.latency.runner import Method, time_calls

HARNESS_TARGET_US = 2.0


def small_cnn(folder: Path) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, 10),
    ).eval()
    return edgeml.convert(model, "onnx", folder, inputs=["image:1x3x96x96"], name="cnn96").onnx


def harness_cost_us(seconds: float = 1.0) -> dict:
    """Per-iteration cost of the timing loop itself, and the median time it measures for an empty call."""
    method = Method(min_runs=1000, min_seconds=seconds, max_seconds=seconds * 2)
    start = time.perf_counter_ns()
    samples, _ = time_calls(lambda: None, method, 1000)
    elapsed = time.perf_counter_ns() - start
    return {"per_iteration_us": elapsed / len(samples) / 1e3, "median_sample_us": float(np.median(samples)) / 1e3,
            "iterations": len(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, help="intra-op threads (default: onnxruntime's choice)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    method = Method(min_seconds=args.min_seconds)
    with tempfile.TemporaryDirectory() as folder:
        artifact = small_cnn(Path(folder))
        reference = edgeml.bench(artifact, method=method, threads=args.threads)
        p50, p99 = reference.stats["p50_ms"], reference.stats["p99_ms"]
        print(f"reference run: p50 {p50:.3f} ms, p99 {p99:.3f} ms, CoV {reference.stats['cov']:.1%}, "
              f"{reference.stats['count']} runs")
        loose, tight = 1.5 * p99, 0.5 * p50
        passes = [edgeml.bench(artifact, budget_ms=loose, method=method, threads=args.threads) for _ in range(args.repeats)]
        fails = [edgeml.bench(artifact, budget_ms=tight, method=method, threads=args.threads) for _ in range(args.repeats)]
    passed = sum(bool(r.passed) for r in passes)
    failed = sum(r.passed is False for r in fails)
    harness = harness_cost_us()
    print(f"budget 1.5 x p99 = {loose:.3f} ms: passed {passed} of {args.repeats} "
          f"(gated p99 {min(r.gated_ms for r in passes):.3f}-{max(r.gated_ms for r in passes):.3f} ms)")
    print(f"budget 0.5 x p50 = {tight:.3f} ms: failed {failed} of {args.repeats} "
          f"(gated p99 {min(r.gated_ms for r in fails):.3f}-{max(r.gated_ms for r in fails):.3f} ms)")
    print(f"harness: {harness['per_iteration_us']:.3f} us per iteration around an empty callable "
          f"(median measured call {harness['median_sample_us']:.3f} us; target < {HARNESS_TARGET_US} us)")
    ok = passed == args.repeats and failed == args.repeats and harness["per_iteration_us"] < HARNESS_TARGET_US
    if args.json:
        args.json.write_text(json.dumps({
            "reference": {"p50_ms": p50, "p99_ms": p99, "cov": reference.stats["cov"]},
            "loose_budget_ms": loose, "passed": passed, "tight_budget_ms": tight, "failed": failed,
            "repeats": args.repeats, "gated_ms_loose": [r.gated_ms for r in passes],
            "gated_ms_tight": [r.gated_ms for r in fails], "harness": harness, "ok": ok,
        }, indent=2) + "\n")
    print("gate does not flap" if ok else "GATE FLAPPED or harness too slow")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
