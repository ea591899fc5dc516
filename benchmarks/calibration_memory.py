"""Calibration memory does not grow with the number of samples; and FP32 vs INT8 latency of a real CNN.

A ResNet-18-shaped network (random weights, 1x3x224x224) is exported by edgeml, then calibrated in fresh
processes on 128 and on 1024 streamed samples. ``calibrate`` resets the peak-RSS mark as it starts (Linux:
/proc/self/clear_refs) and reads it at the end (VmHWM), so the figure is calibration's own peak, not that of
loading or pre-processing. Target: peak(1024) <= 1.25 x peak(128). Then the 1024-sample INT8 model
(quantized for ``--int8-target``, default x86) and the FP32 one are benched (p50, batch 1) on this machine.

    python benchmarks/calibration_memory.py [--samples 128,1024] [--int8-target x86-vnni] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TARGET_RATIO = 1.25

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import resnet18_module  # noqa: E402


def images(count: int):
    """A streaming calibration source: ``count`` seeded random images, one at a time."""
    def generate():
        rng = np.random.default_rng(0)
        for _ in range(count):
            yield {"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
    return generate


def child(model: str, count: int, target: str, counts: str) -> None:
    """Calibrate in this fresh process and print its peak RSS (MB) and the time, as JSON."""
    from edgeml.calibration.quantize import calibrate, peak_rss_mb, preprocess
    from edgeml.datafiles import open_source
    from edgeml.calibration.targets import get_target
    from edgeml.onnx_graph import graph_input_specs, read_onnx

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        pre = workdir / "pre.onnx"
        preprocess(Path(model), pre)
        source = open_source(images(count), graph_input_specs(read_onnx(model)))
        process_peak = peak_rss_mb()
        result = calibrate(pre, source, "minmax", get_target(target), workdir, lambda message: None)
        if count == max(int(c) for c in counts.split(",")):
            from edgeml.calibration.quantize import quantize_static

            quantize_static(pre, result.ranges, get_target(target), [], Path(model).with_suffix(".int8.onnx"))
    print(json.dumps({"samples": count, "peak_rss_mb": result.peak_rss_mb, "process_peak_before_mb": process_peak,
                      "seconds": result.seconds}))


def main() -> int:
    from edgeml.calibration.targets import DEFAULT_TARGET, TARGETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="128,1024")
    parser.add_argument("--int8-target", default=DEFAULT_TARGET, choices=list(TARGETS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    counts = [int(c) for c in args.samples.split(",")]
    import edgeml

    with tempfile.TemporaryDirectory() as folder:
        fp32 = edgeml.convert(resnet18_module(), "onnx", folder, inputs=["input:1x3x224x224"], name="resnet18").onnx
        runs = []
        for count in counts:
            out = subprocess.run([sys.executable, __file__, "--child", str(fp32), str(count), args.int8_target, args.samples],
                                 capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{count:5d} samples: calibration peak RSS {runs[-1]['peak_rss_mb']:.0f} MB "
                  f"(pre-processing peaked at {runs[-1]['process_peak_before_mb']:.0f} MB), {runs[-1]['seconds']:.1f} s")
        int8 = fp32.with_suffix(".int8.onnx")
        from edgeml.environment import fingerprint
        from edgeml.latency.runner import Method

        method = Method(min_seconds=5)
        p50 = {name: edgeml.bench(path, method=method).stats["p50_ms"] for name, path in (("fp32", fp32), ("int8", int8))}
    ratio = runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    print(f"peak RSS ratio {counts[-1]} / {counts[0]} samples: {ratio:.3f} (target <= {TARGET_RATIO})")
    cpu = fingerprint()["cpu"]
    print(f"latency p50 batch 1 on {cpu}: FP32 {p50['fp32']:.2f} ms, INT8 ({args.int8_target}) {p50['int8']:.2f} ms "
          f"({p50['fp32'] / p50['int8']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "ratio": ratio, "p50_ms": p50, "int8_target": args.int8_target,
                                         "measured_on": cpu}, indent=2) + "\n")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        raise SystemExit(main())
