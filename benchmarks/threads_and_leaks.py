"""What must keep holding (issue 8): one runtime shared by threads gives the results it gives alone; many calls
do not grow the process; load/close cycles leave no file descriptors behind. Prints the figures.

- threads: 8 threads x 2000 calls on one edgeml.load()ed runtime, each thread its own inputs, every result
  compared bit for bit with the single-threaded one. Target: 0 mismatches, 0 errors.
- memory: VmRSS (/proc/self/status) before and after 100,000 calls, after a warm-up. Target: a few KB.
- descriptors: entries of /proc/self/fd before and after 500 load/run/close cycles. Target: 0.

Linux only (/proc). Exits 1 when a figure misses its target.

    python benchmarks/threads_and_leaks.py [--threads 8] [--calls 2000] [--rss-calls 100000] [--cycles 500]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgeml

#: RSS growth over the calls that still counts as "a few KB": allocator noise, not a leak per call
#: (100,000 calls leaking 1 byte each would be 100 KB).
RSS_LIMIT_KB = 64


def mlp(path: Path) -> Path:
    """A 32 -> 64 -> 10 MLP: enough work per call for threads to overlap inside ONNX Runtime."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("W1", (32, 64)), ("B1", (64,)), ("W2", (64, 10)))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "B1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def shared_runtime(path: Path, threads: int, calls: int) -> dict:
    """Threads calling one runtime at once; each result must equal the one computed alone."""
    inputs = [np.random.default_rng(i).standard_normal((4, 32)).astype(np.float32) for i in range(threads)]
    with edgeml.load(path) as model:
        expected = [model(x) for x in inputs]
        mismatches, errors = [0] * threads, []
        barrier = threading.Barrier(threads)

        def work(i: int) -> None:
            barrier.wait()
            try:
                for _ in range(calls):
                    if not np.array_equal(model(inputs[i]), expected[i]):
                        mismatches[i] += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported, not raised in a thread
                errors.append(f"{type(exc).__name__}: {exc}")

        start = time.perf_counter()
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return {"threads": threads, "calls": threads * calls, "mismatches": sum(mismatches), "errors": len(errors),
            "first_error": errors[0] if errors else None, "seconds": time.perf_counter() - start}


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def memory_growth(path: Path, calls: int) -> dict:
    """RSS after ``calls`` calls minus RSS after a warm-up of 1000 (allocator pools, lazy init)."""
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    with edgeml.load(path) as model:
        for _ in range(1000):
            model(x)
        gc.collect()
        before = rss_kb()
        for _ in range(calls):
            model(x)
        gc.collect()
        after = rss_kb()
    return {"calls": calls, "rss_before_kb": before, "rss_after_kb": after, "growth_kb": after - before}


def descriptors(path: Path, cycles: int) -> dict:
    """Open file descriptors before and after ``cycles`` load/run/close cycles."""
    x = np.zeros((1, 32), np.float32)
    with edgeml.load(path) as model:  # the first load imports and initializes what stays loaded
        model(x)
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(cycles):
        with edgeml.load(path) as model:
            model(x)
    gc.collect()
    after = len(os.listdir("/proc/self/fd"))
    return {"cycles": cycles, "fds_before": before, "fds_after": after, "leaked": after - before}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=2000, help="calls per thread")
    parser.add_argument("--rss-calls", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeml-leaks-") as folder:
        path = mlp(Path(folder) / "mlp.onnx")
        shared = shared_runtime(path, args.threads, args.calls)
        memory = memory_growth(path, args.rss_calls)
        fds = descriptors(path, args.cycles)
    print(f"threads: {shared['threads']} threads x {args.calls} calls on one runtime in {shared['seconds']:.1f} s: "
          f"{shared['mismatches']} results differ from the single-threaded ones, {shared['errors']} errors"
          + (f" (first: {shared['first_error']})" if shared["first_error"] else ""))
    print(f"memory: {memory['calls']:,} calls grew RSS by {memory['growth_kb']} KB "
          f"({memory['rss_before_kb']} -> {memory['rss_after_kb']} KB; target <= {RSS_LIMIT_KB} KB)")
    print(f"descriptors: {fds['cycles']} load/close cycles left {fds['leaked']} file descriptors open "
          f"({fds['fds_before']} -> {fds['fds_after']})")
    held = (shared["mismatches"] == 0 and shared["errors"] == 0 and memory["growth_kb"] <= RSS_LIMIT_KB
            and fds["leaked"] <= 0)
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
