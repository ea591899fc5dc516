"""Runtime wrapper overhead: edgeml.load(...).run / __call__ against a bare onnxruntime InferenceSession.run.

One process, one tiny model (a 16x16 Gemm, so the backend's own work is small and the wrapper shows),
the three ways interleaved in blocks so that drift (turbo, other load) hits them alike. Reports the
median per-call time of each and the difference to bare onnxruntime. Target: <= 5 us per call.

    python benchmarks/runtime_overhead.py [--blocks 200] [--calls 200] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import edgeml
from edgeml.runtimes.onnxrt import session_options

TARGET_US = 5.0


def tiny_model(path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "W")
    bias = numpy_helper.from_array(np.zeros(16, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [weight, bias],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def per_call_ns(fn, calls: int) -> float:
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(calls):
        fn()
    return (clock() - start) / calls


def measure(blocks: int, calls: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.onnx"
        tiny_model(path)
        x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
        session = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
        model = edgeml.load(path, threads=1)
        feeds = {"x": x}
        ways = {
            "onnxruntime InferenceSession.run": lambda: session.run(None, feeds),
            "edgeml Runtime.run": lambda: model.run(feeds),
            "edgeml Runtime.__call__": lambda: model(x),
        }
        for fn in ways.values():  # warm-up
            per_call_ns(fn, calls)
        samples = {name: [] for name in ways}
        for _ in range(blocks):
            for name, fn in ways.items():
                samples[name].append(per_call_ns(fn, calls))
    medians = {name: statistics.median(v) / 1e3 for name, v in samples.items()}
    bare = medians["onnxruntime InferenceSession.run"]
    return {
        "median_us": medians,
        "overhead_us": {name: m - bare for name, m in medians.items() if not name.startswith("onnxruntime")},
        "blocks": blocks, "calls_per_block": calls, "target_us": TARGET_US,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=200)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.blocks, args.calls)
    for name, us in result["median_us"].items():
        extra = f"  (+{result['overhead_us'][name]:.2f} us)" if name in result["overhead_us"] else ""
        print(f"{name:36s} {us:8.2f} us/call{extra}")
    worst = max(result["overhead_us"].values())
    verdict = "met" if worst <= TARGET_US else "MISSED"
    print(f"wrapper overhead: {worst:.2f} us per call (target <= {TARGET_US} us: {verdict})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if worst <= TARGET_US else 1


if __name__ == "__main__":
    raise SystemExit(main())
