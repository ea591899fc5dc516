"""``--int8``: quantize a checked FP32 ONNX artifact, judge it against FP32, fall back layer by layer.

The accuracy gate runs on held-out data (never the samples that calibrated): label agreement or, with
labels, the accuracy drop in points for classifiers, cosine similarity otherwise. When the gate fails,
the layers whose activations lose most (lowest SQNR between FP32 and Q/DQ) are kept in FP32 and the
model is quantized again with the same ranges, a few rounds at most. An INT8 artifact that fails is
never written; the report says why, in numbers.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import random_feeds, read_feeds, stack_samples
from ..errors import CheckFailed, InputError
from ..files import atomic_path
from ..spec import TensorSpec
from .quantize import (FLAVOURS, METHODS, calibrate, layer_sqnr, preprocess, quantize_dynamic, quantize_static,
                       read_labels, static_settings)

#: Generated inputs for judging a dynamic quantization when no --eval-data is given.
GENERATED_EVAL_SAMPLES = 64
#: Held-out samples used for the per-layer SQNR (activations of every layer are kept in memory).
SQNR_SAMPLES = 8


@dataclass
class Int8Options:
    calib: Any = None  # a calibration source (path, "file.py:function", callable); None: dynamic INT8
    calib_samples: int | None = 128
    method: str = "minmax"
    flavour: str = "cpu"
    max_accuracy_drop: float = 1.0  # points of accuracy, or of label agreement without labels
    min_cosine: float = 0.99
    eval_data: Any = None
    eval_labels: Any = None
    eval_samples: int = 256
    image: Any = None  # calibration.sources.ImageOptions for image folders
    seed: int = 0
    max_rounds: int = 3

    def validate(self) -> "Int8Options":
        if self.method not in METHODS:
            raise InputError(f"unknown --calib-method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.flavour not in FLAVOURS:
            raise InputError(f"unknown --int8-flavour {self.flavour!r}; use one of {', '.join(FLAVOURS)}")
        if self.max_accuracy_drop < 0 or not 0 < self.min_cosine <= 1:
            raise InputError("--max-accuracy-drop must be >= 0 (points) and the cosine floor in (0, 1]")
        if self.eval_labels is not None and self.eval_data is None:
            raise InputError("--eval-labels are the labels of --eval-data: give both")
        if self.calib_samples is not None and self.calib_samples < 1:
            raise InputError(f"--calib-samples must be at least 1, got {self.calib_samples}")
        for flag, value in (("--calib", self.calib), ("--eval-data", self.eval_data), ("--eval-labels", self.eval_labels)):
            if isinstance(value, (str, Path)) and ":" not in str(value) and not Path(value).exists():
                raise InputError(f"{flag}: no such file or folder: {value}; check the path")
        return self


def build_int8(fp32: Path, final: Path, specs: list[TensorSpec], options: Int8Options,
               say: Callable[[str], None]) -> dict:
    """Quantize ``fp32`` into ``final``; returns the quantization report (raises CheckFailed if the gate fails)."""
    options.validate()
    labels = read_labels(options.eval_labels) if options.eval_labels is not None else None
    with tempfile.TemporaryDirectory(prefix="edgeml-int8-") as folder:
        workdir = Path(folder)
        pre = workdir / "preprocessed.onnx"
        report: dict[str, Any] = {"mode": "static" if options.calib is not None else "dynamic",
                                  "flavour": options.flavour, **preprocess(fp32, pre)}
        if options.calib is not None:
            from .sources import open_source

            source = open_source(options.calib, specs, image=options.image)
            holdout_size = 0 if options.eval_data is not None else options.eval_samples
            calib, holdout = source.split(options.calib_samples, holdout_size, options.seed)
            say(f"calibrating on {len(calib)} samples of {calib.description} ({options.method}, {options.flavour} flavour)")
            calibration = calibrate(pre, calib, options.method, options.flavour, workdir, say)
            report.update(method=options.method, types=static_settings(options.flavour),
                          calibration_samples=calibration.samples,
                          calibration_seconds=round(calibration.seconds, 3),
                          peak_rss_mb=round(calibration.peak_rss_mb, 1), source=source.description,
                          preprocessing=source.preprocessing)
            feeds, origin = ((read_feeds(options.eval_data, specs), f"{options.eval_data}") if options.eval_data
                             else (stack_samples(holdout), f"{len(holdout)} held-out samples of the calibration source"))
        else:
            calibration = None
            report["method"] = "dynamic (weights INT8, activations quantized at run time)"
            feeds, origin = ((read_feeds(options.eval_data, specs), f"{options.eval_data}") if options.eval_data
                             else (random_feeds([s.with_batch(GENERATED_EVAL_SAMPLES) for s in specs], seed=options.seed),
                                   f"{GENERATED_EVAL_SAMPLES} generated samples (seed {options.seed})"))
        generated = options.calib is None and options.eval_data is None
        rows = min(len(v) for v in feeds.values())
        if labels is not None and len(labels) != rows:
            raise InputError(f"--eval-labels has {len(labels)} labels for {rows} evaluation samples; give one per sample")
        sqnr_samples = [{k: v[i:i + 1] for k, v in feeds.items()} for i in range(min(SQNR_SAMPLES, rows))]

        excluded: list[str] = []
        for round_ in range(options.max_rounds + 1):
            candidate = workdir / f"int8_round{round_}.onnx"
            if calibration is not None:
                quantize_static(pre, calibration.ranges, options.flavour, excluded, candidate)
            else:
                quantize_dynamic(pre, candidate)
            accuracy = evaluate(fp32, candidate, feeds, labels, options, origin, judge_labels=not generated)
            say(accuracy["summary"])
            if accuracy["passed"] or calibration is None or round_ == options.max_rounds:
                break
            layers = [layer for layer in layer_sqnr(pre, candidate, sqnr_samples, workdir)
                      if not set(layer["nodes"]) <= set(excluded)][: 2**round_]
            if not layers:
                break
            excluded += [node for layer in layers for node in layer["nodes"] if node not in excluded]
            worst = ", ".join(f"{layer['tensor']} ({layer['sqnr_db']:.1f} dB)" for layer in layers)
            say(f"keeping the nodes around the lowest-SQNR tensors {worst} in FP32 and quantizing again")
        if calibration is not None:
            report["lowest_sqnr_layers"] = [
                {**layer, "sqnr_db": round(layer["sqnr_db"], 2)}
                for layer in layer_sqnr(pre, candidate, sqnr_samples, workdir)[:10]
            ]
        report.update(excluded_layers=excluded, rounds=round_ + 1, accuracy=accuracy,
                      size_fp32_bytes=fp32.stat().st_size, size_int8_bytes=candidate.stat().st_size)
        report["latency"] = quick_latency(fp32, candidate, say)
        if accuracy["passed"] and not _has_quantized_ops(candidate):
            accuracy.update(passed=False, summary=accuracy["summary"].replace(": passed", "") +
                            ": FAILED (every layer had to stay FP32, so nothing is INT8)")
        if not accuracy["passed"]:
            raise CheckFailed(
                f"{final.name}: the INT8 model fails the accuracy gate after {round_ + 1} round(s) "
                f"({accuracy['summary']}; {len(excluded)} node(s) kept in FP32); nothing written. Try more or more "
                "representative --calib data, --calib-method entropy or percentile, or a looser --max-accuracy-drop",
                report,
            )
        with atomic_path(final) as tmp:
            tmp.write_bytes(candidate.read_bytes())
    return report


def _has_quantized_ops(path: Path) -> bool:
    import onnx

    from ..inspection import QUANTIZED_OPS

    return any(node.op_type in QUANTIZED_OPS for node in onnx.load(str(path)).graph.node)


def evaluate(fp32: Path, int8: Path, feeds: dict, labels, options: Int8Options, origin: str,
             judge_labels: bool = True) -> dict:
    """INT8 against FP32 on the evaluation inputs: agreement or accuracy drop, cosine, max error; the verdict.

    On generated inputs (``judge_labels=False``) labels mean little, so the verdict rests on cosine."""
    from ..runtimes.onnxrt import OnnxRuntime
    from ..validate import compare, run_all

    with OnnxRuntime(fp32) as reference, OnnxRuntime(int8) as candidate:
        check = compare(reference, candidate, feeds, precision="int8")
        outputs = ([run_all(reference, feeds), run_all(candidate, feeds)] if labels is not None else None)
    floats = [o for o in check.outputs if o.cosine is not None]
    agreement = next((o.label_agreement if o.label_agreement is not None else o.top1_agreement
                      for o in check.outputs if o.label_agreement is not None or o.top1_agreement is not None), None)
    result = {"samples": check.samples, "inputs_from": origin,
              "cosine": min((o.cosine for o in floats), default=None),
              "max_abs": max((o.max_abs for o in floats), default=None), "label_agreement": agreement}
    parts = [f"INT8 vs FP32 on {check.samples} samples ({origin})"]
    if labels is not None:
        accuracy_fp32, accuracy_int8 = (float((predictions(o) == labels).mean()) for o in outputs)
        drop = 100 * (accuracy_fp32 - accuracy_int8)
        result.update(accuracy_fp32=accuracy_fp32, accuracy_int8=accuracy_int8, accuracy_drop_points=drop)
        result["passed"] = drop <= options.max_accuracy_drop
        parts.append(f"accuracy {accuracy_fp32:.2%} -> {accuracy_int8:.2%} (drop {drop:.2f} points, limit "
                     f"{options.max_accuracy_drop:g})")
    elif agreement is not None and judge_labels:
        lost = 100 * (1 - agreement)
        result["passed"] = lost <= options.max_accuracy_drop
        parts.append(f"labels agree {agreement:.2%} ({lost:.2f} points lost, limit {options.max_accuracy_drop:g})")
    else:
        result["passed"] = result["cosine"] is not None and result["cosine"] >= options.min_cosine
    if result["cosine"] is not None:
        judged_on_cosine = labels is None and (agreement is None or not judge_labels)
        parts.append(f"cosine {result['cosine']:.5f}" + (f" (floor {options.min_cosine:g})" if judged_on_cosine else ""))
        parts.append(f"max abs error {result['max_abs']:.3g}")
    result["summary"] = ", ".join(parts) + (": passed" if result["passed"] else ": FAILED")
    if not result["passed"] and agreement is not None and check.samples * options.max_accuracy_drop < 100:
        result["summary"] += (f" (with {check.samples} samples one disagreement is {100 / check.samples:.2g} points: "
                              "give more --eval-data or calibration data for a finer gate)")
    return result


def predictions(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Class predictions: an integer label output if there is one, else the argmax of the first score matrix."""
    for value in outputs.values():
        if value.dtype.kind in "iu" and value.ndim == 1:
            return value
    scores = next((v for v in outputs.values() if v.dtype.kind == "f" and v.ndim == 2), None)
    if scores is None:
        raise InputError("--eval-labels needs a classifier: a label output or a (samples, classes) score output")
    return scores.argmax(axis=1)


def quick_latency(fp32: Path, int8: Path, say: Callable[[str], None]) -> dict:
    """p50 of FP32 and INT8 on this machine, with the CPU's ISA: INT8 gains need VNNI/AMX/dot-product units."""
    from ..environment import cpu_isa
    from ..latency.runner import Method, bench

    from ..runtimes.onnxrt import OnnxRuntime

    with OnnxRuntime(fp32) as runtime:
        first = runtime.inputs[0].shape[0] if runtime.inputs and runtime.inputs[0].shape else 1
    batch = first if isinstance(first, int) else 1
    method = Method(warmup_ms=100, warmup_runs=5, min_runs=50, min_seconds=0.5, max_seconds=5)
    p50 = {name: bench(path, percentile=50, batch=batch, method=method).stats["p50_ms"]
           for name, path in (("fp32", fp32), ("int8", int8))}
    isa = cpu_isa()
    speedup = p50["fp32"] / p50["int8"] if p50["int8"] > 0 else float("inf")
    result = {"p50_fp32_ms": p50["fp32"], "p50_int8_ms": p50["int8"], "speedup": speedup, "isa": isa}
    line = f"latency here (batch {batch}): FP32 p50 {p50['fp32']:.3f} ms, INT8 p50 {p50['int8']:.3f} ms ({speedup:.2f}x)"
    if speedup <= 1.0:
        fast_int8 = {"avx512_vnni", "avx_vnni", "amx", "neon_dotprod"} & set(isa)
        line += (": INT8 is not faster on this CPU" + ("" if fast_int8 else
                 " (no VNNI/AMX/dot-product instructions: CPUs without them gain little from INT8)"))
        result["note"] = line
    say(line)
    return result
