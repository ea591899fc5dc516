"""``--int8``: quantize a checked FP32 ONNX artifact, judge it against FP32, fall back layer by layer.

The accuracy gate runs on held-out data (never the samples that calibrated): label agreement or, with
labels, the accuracy drop in points for classifiers, cosine similarity otherwise. When the gate fails,
the layers whose activations lose most (lowest SQNR between FP32 and Q/DQ) are kept in FP32 and the
model is quantized again with the same ranges, a few rounds at most. An INT8 artifact that fails is
never written; the report says why, in numbers.

The recipe comes from the INT8 target (``targets.py``) and the gate computes with exact int8 arithmetic,
so the file and the verdict are the same whichever CPU builds and judges. Only the quick latency is this
machine's, and the report says so.
"""

from __future__ import annotations

import numbers
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import random_feeds, read_feeds, sample_count, stack_samples
from ..errors import CheckFailed, InputError
from ..files import atomic_path
from ..inspection import QUANTIZED_OPS
from ..readable import regular_file
from ..spec import TensorSpec
from .quantize import (METHODS, calibrate, check_finite, layer_sqnr, preprocess, quantize_dynamic, quantize_static,
                       read_labels)
from .targets import DEFAULT_TARGET, INT32_DOT, JUDGED_WITH, Target, get_target, judging_runtime

#: Generated inputs for judging a dynamic quantization when no --eval-data is given.
GENERATED_EVAL_SAMPLES = 64
#: Held-out samples used for the per-layer SQNR (activations of every layer are kept in memory).
SQNR_SAMPLES = 8


@dataclass
class Int8Options:
    calib: Any = None  # a calibration source (path, "file.py:function", callable); None: dynamic INT8
    calib_samples: int | None = 128
    method: str = "minmax"
    target: str = DEFAULT_TARGET  # the device's recipe: x86, x86-vnni, arm64, tensorrt (calibration.targets)
    max_accuracy_drop: float = 1.0  # points of accuracy, or of label agreement without labels
    min_cosine: float = 0.99
    eval_data: Any = None
    eval_labels: Any = None
    eval_samples: int = 256
    image: Any = None  # calibration.sources.ImageOptions for image folders
    seed: int = 0
    max_rounds: int = 3

    def validate(self) -> "Int8Options":
        """Every option checked before anything is exported; --eval-labels are read here for the same reason."""
        target = get_target(self.target)
        if self.method not in METHODS:
            raise InputError(f"unknown --calib-method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.calib is None and not target.dynamic:
            raise InputError(f"--int8-target {target.name} needs --calib data: it builds INT8 from static Q/DQ "
                             "scales, which dynamic INT8 does not have")
        if not (_real(self.max_accuracy_drop) and self.max_accuracy_drop >= 0 and _real(self.min_cosine)
                and 0 < self.min_cosine <= 1):
            raise InputError(f"--max-accuracy-drop must be a number >= 0 (points) and the cosine floor a number in "
                             f"(0, 1], got {self.max_accuracy_drop!r} and {self.min_cosine!r}")
        for flag, value, least in (("--calib-samples", self.calib_samples, 1), ("eval_samples", self.eval_samples, 1),
                                   ("max_rounds", self.max_rounds, 0), ("seed", self.seed, 0)):
            if not (value is None and flag == "--calib-samples") and not (_whole(value) and value >= least):
                raise InputError(f"{flag} must be a whole number >= {least}, got {value!r}")
        if self.eval_labels is not None and self.eval_data is None:
            raise InputError("--eval-labels are the labels of --eval-data: give both")
        for flag, value in (("--calib", self.calib), ("--eval-data", self.eval_data), ("--eval-labels", self.eval_labels)):
            if isinstance(value, (str, Path)) and ":" not in str(value):
                if not Path(value).exists():
                    raise InputError(f"{flag}: no such file or folder: {value}; check the path")
                if not Path(value).is_dir():  # a FIFO or a device is refused now, not after the export
                    regular_file(value, f"{flag} file")
        if self.eval_labels is not None:
            read_labels(self.eval_labels)
        return self


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def build_int8(fp32: Path, final: Path, specs: list[TensorSpec], options: Int8Options,
               say: Callable[[str], None]) -> dict:
    """Quantize ``fp32`` into ``final``; returns the quantization report (raises CheckFailed if the gate fails).

    Every temporary file lives in a private folder, removed on success, failure and Ctrl-C."""
    options.validate()
    target = get_target(options.target)
    static = options.calib is not None
    labels = read_labels(options.eval_labels) if options.eval_labels is not None else None
    with tempfile.TemporaryDirectory(prefix="work-", dir=final.parent) as folder:  # in the swept staging folder
        workdir = Path(folder)
        pre = workdir / "preprocessed.onnx"
        report: dict[str, Any] = {"mode": "static" if static else "dynamic", "target": target.name,
                                  "recipe": target.recipe(static), "judged_with": JUDGED_WITH, "notes": [],
                                  **preprocess(fp32, pre)}
        if static:
            from .sources import open_source

            source = open_source(options.calib, specs, image=options.image)
            holdout_size = 0 if options.eval_data is not None else options.eval_samples
            calib, holdout = source.split(options.calib_samples, holdout_size, options.seed)
            say(f"calibrating on {len(calib)} samples of {calib.description} ({options.method}, target {target.name})")
            calibration = calibrate(pre, calib, options.method, target, workdir, say)
            report.update(method=options.method, calibration_samples=calibration.samples,
                          calibration_seconds=round(calibration.seconds, 3),
                          peak_rss_mb=round(calibration.peak_rss_mb, 1), source=source.description,
                          preprocessing=source.preprocessing)
            feeds, origin = ((read_feeds(options.eval_data, specs), f"{options.eval_data}") if options.eval_data
                             else (stack_samples(holdout), f"{len(holdout)} held-out samples of {source.name}"))
        else:
            calibration = None
            feeds, origin = ((read_feeds(options.eval_data, specs), f"{options.eval_data}") if options.eval_data
                             else (random_feeds([s.with_batch(GENERATED_EVAL_SAMPLES) for s in specs], seed=options.seed),
                                   f"{GENERATED_EVAL_SAMPLES} generated samples (seed {options.seed})"))
        check_finite(feeds, f"the evaluation data ({origin})")
        generated = not static and options.eval_data is None
        rows = sample_count(feeds)
        if labels is not None and len(labels) != rows:
            raise InputError(f"--eval-labels has {len(labels)} labels for {rows} evaluation samples; give one per sample")
        sqnr_samples = [{k: v[i:i + 1] if np.ndim(v) else v for k, v in feeds.items()}  # scalars: no batch axis
                        for i in range(min(SQNR_SAMPLES, rows))]

        excluded: list[str] = []
        for round_ in range(options.max_rounds + 1):
            candidate = workdir / f"int8_round{round_}.onnx"
            if calibration is not None:
                quantize_static(pre, calibration.ranges, target, excluded, candidate)
            else:
                quantize_dynamic(pre, target, candidate)
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
        else:
            convolutions = sum(count for op, count in _ops(pre).items() if op in ("Conv", "ConvTranspose"))
            if convolutions:
                report["notes"].append(f"dynamic INT8 quantizes MatMul/Gemm only: the {convolutions} convolution(s) "
                                       "stay FP32; give --calib data (a few hundred real inputs) for static INT8, "
                                       "which quantizes them")
                say(report["notes"][-1])
        report.update(excluded_layers=excluded, rounds=round_ + 1, accuracy=accuracy,
                      size_fp32_bytes=fp32.stat().st_size, size_int8_bytes=candidate.stat().st_size)
        if not excluded and not _ops(candidate).keys() & QUANTIZED_OPS:
            raise CheckFailed(f"{final.name}: nothing to quantize: none of the model's operators "
                              f"({', '.join(sorted(_ops(pre))) or 'none'}) has an INT8 form here; nothing written, "
                              "ship the FP32 artifact", report)
        if accuracy["passed"] and not _ops(candidate).keys() & QUANTIZED_OPS:
            accuracy.update(passed=False, summary=accuracy["summary"].replace(": passed", "") +
                            ": FAILED (every layer had to stay FP32, so nothing is INT8)")
        if not accuracy["passed"]:
            hints = (["more or more representative --calib data", "--calib-method entropy or percentile"] if static
                     else ["--calib data for static INT8"])
            hints.append("a lower cosine floor" if accuracy["judged_on"] == "cosine" else "a looser --max-accuracy-drop")
            raise CheckFailed(
                f"{final.name}: the INT8 model fails the accuracy gate after {round_ + 1} round(s) "
                f"({accuracy['summary']}; {len(excluded)} node(s) kept in FP32); nothing written. "
                f"Try {', '.join(hints[:-1])} or {hints[-1]}",
                report,
            )
        report["latency"] = quick_latency(fp32, candidate, target)
        with atomic_path(final) as tmp:
            tmp.write_bytes(candidate.read_bytes())
    return report


def _ops(path: Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def evaluate(fp32: Path, int8: Path, feeds: dict, labels, options: Int8Options, origin: str,
             judge_labels: bool = True) -> dict:
    """INT8 against FP32 on the evaluation inputs: agreement or accuracy drop, cosine, max error; the verdict.

    On generated inputs (``judge_labels=False``) labels mean little, so the verdict rests on cosine. The INT8
    model runs with exact int8 arithmetic (``targets.judging_runtime``): the same verdict on every CPU."""
    from ..runtimes.onnxrt import OnnxRuntime
    from ..validate import compare, run_all

    with OnnxRuntime(fp32) as reference, judging_runtime(int8) as candidate:
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
        result.update(judged_on="accuracy", passed=drop <= options.max_accuracy_drop)
        parts.append(f"accuracy {accuracy_fp32:.2%} -> {accuracy_int8:.2%} (drop {drop:.2f} points, limit "
                     f"{options.max_accuracy_drop:g})")
    elif agreement is not None and judge_labels:
        lost = 100 * (1 - agreement)
        result.update(judged_on="label agreement", passed=lost <= options.max_accuracy_drop)
        parts.append(f"labels agree {agreement:.2%} ({lost:.2f} points lost, limit {options.max_accuracy_drop:g})")
    else:
        result.update(judged_on="cosine", passed=result["cosine"] is not None and result["cosine"] >= options.min_cosine)
    if result["cosine"] is not None:
        floor = f" (floor {options.min_cosine:g})" if result["judged_on"] == "cosine" else ""
        parts.append(f"cosine {result['cosine']:.5f}{floor}")
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


def quick_latency(fp32: Path, int8: Path, target: Target) -> dict:
    """p50 of FP32 and INT8 with this machine's own kernels: a figure for this CPU only (``measured_on``),
    unlike the accuracy, which holds on any. INT8 gains need VNNI/AMX/dot-product units."""
    from ..environment import fingerprint
    from ..latency.runner import Method, bench
    from ..runtimes.onnxrt import OnnxRuntime

    with OnnxRuntime(fp32) as runtime:
        first = runtime.inputs[0].shape[0] if runtime.inputs and runtime.inputs[0].shape else 1
    batch = first if isinstance(first, int) else 1
    method = Method(warmup_ms=100, warmup_runs=5, min_runs=50, min_seconds=0.5, max_seconds=5)
    p50 = {name: bench(path, percentile=50, batch=batch, method=method).stats["p50_ms"]
           for name, path in (("fp32", fp32), ("int8", int8))}
    machine = fingerprint()
    isa = set(machine["isa"])
    speedup = p50["fp32"] / p50["int8"] if p50["int8"] > 0 else float("inf")
    result = {"measured_on": machine["cpu"], "isa": machine["isa"], "batch": batch, "p50_fp32_ms": p50["fp32"],
              "p50_int8_ms": p50["int8"], "speedup": speedup}
    notes = []
    if speedup <= 1.0:
        notes.append("INT8 is not faster on this CPU" + ("" if isa & (INT32_DOT | {"neon_dotprod"}) else
                     " (no VNNI/AMX/dot-product instructions: CPUs without them gain little from INT8)"))
    if target.requires and not target.requires & isa:
        notes.append(f"this CPU has no {'/'.join(sorted(target.requires))}: {target.name} models lose accuracy here "
                     "(int16 saturation); --int8-target x86 is exact on such CPUs")
    if notes:
        result["note"] = "; ".join(notes)
    return result
