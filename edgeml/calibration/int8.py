"""``--int8``: quantize a checked FP32 ONNX artifact, judge it against FP32, fall back layer by layer.

The accuracy gate runs on held-out data (never the samples that calibrated), real whenever the user gave
any. A classifier (``--eval-labels``, ``--task``, or the artifact's task) is judged on labels: the accuracy
drop in points with labels, else label agreement. Any other model is judged on cosine similarity: the
lowest cosine of one sample's outputs, on real tokens only where the model takes an attention mask. When
the gate fails, the layers that lose most (lowest SQNR) are kept in FP32 and the model is quantized again,
a few rounds at most. An INT8 artifact that fails is never written; the report says why, in numbers.

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

from ..data import (generated_origin, random_feeds, read_feeds, sample_count, select_rows,
                    stack_samples, unbatched)
from ..datafiles import is_text_file, open_source
from ..errors import CheckFailed, ExportError, InputError
from ..files import atomic_path
from ..inspection import QUANTIZED_OPS
from ..model_meta import CLASSIFIER_TASKS, TASKS, input_meta
from ..readable import regular_file
from ..spec import TensorSpec, batched, fixed_batch
from .quantize import (METHODS, OUTLIER_RATIO, SMOOTHING_ALPHA, calibrate, check_finite, layer_sqnr, mask_path,
                       matmul_sqnr, prepare_attention, preprocess, quantize_dynamic, quantize_static, read_labels,
                       scale_rows)
from .targets import DEFAULT_TARGET, INT32_DOT, JUDGED_WITH, Target, get_target, judging_runtime

#: Generated inputs for judging a dynamic quantization when no --eval-data is given.
GENERATED_EVAL_SAMPLES = 64
#: Samples used for the per-layer SQNR (activations of every layer are kept in memory): the evaluation
#: samples INT8 damaged most.
SQNR_SAMPLES = 8
#: Generated samples that find the outlier channels of a token model's MatMul inputs (``scale_rows``):
#: never the evaluation data, which judges the result.
ROW_PROBE_SAMPLES = 16


@dataclass
class Int8Options:
    calib: Any = None  # a calibration source (path, "file.py:function", callable); None: dynamic INT8
    calib_samples: int | None = 128
    method: str = "minmax"
    target: str = DEFAULT_TARGET  # the device's recipe: x86, x86-vnni, arm64, tensorrt (calibration.targets)
    max_accuracy_drop: float = 1.0  # points of accuracy, or of label agreement without labels (classifiers)
    min_cosine: float = 0.99  # the lowest cosine any sample's outputs may have (models that are not classifiers)
    eval_data: Any = None
    eval_labels: Any = None
    eval_samples: int = 256
    image: Any = None  # datafiles.ImageOptions for image folders
    seed: int = 0
    max_rounds: int = 3
    task: str | None = None  # one of model_meta.TASKS; None: the artifact's own (ModelMeta), if it has one
    shapes: dict | None = None  # sizes of symbolic dims in generated evaluation inputs, e.g. {"sequence": 128}
    per_channel: bool | None = None  # INT8 weights per output channel; None: per channel, and for dynamic INT8
    #                                  per tensor as well when per channel fails the gate

    def validate(self) -> "Int8Options":
        """Every option checked before anything is exported; --eval-labels are read here for the same reason."""
        target = get_target(self.target)
        if self.method not in METHODS:
            raise InputError(f"unknown --calib-method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.calib is None and not target.dynamic:
            raise InputError(f"--int8-target {target.name} needs --calib data: it builds INT8 from static Q/DQ "
                             "scales, which dynamic INT8 does not have")
        if not (_real(self.max_accuracy_drop) and self.max_accuracy_drop >= 0):
            raise InputError(f"--max-accuracy-drop must be a number >= 0 (points), got {self.max_accuracy_drop!r}")
        if not (_real(self.min_cosine) and 0 < self.min_cosine <= 1):
            raise InputError(f"--min-cosine must be a number in (0, 1], e.g. 0.99, got {self.min_cosine!r}")
        if self.task is not None and self.task not in TASKS:
            raise InputError(f"unknown --task {self.task!r}; use one of {', '.join(TASKS)}")
        if self.per_channel not in (None, True, False):
            raise InputError(f"per_channel is True, False or None (try per channel, then per tensor), got "
                             f"{self.per_channel!r}")
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


@dataclass
class _Gate:
    """How INT8 is judged against FP32: fixed once per build."""

    feeds: dict
    origin: str
    labels: Any
    classifier: bool  # judged on labels: --eval-labels, --task or the artifact's task says it is a classifier
    judge_labels: bool  # False on generated inputs, where labels mean little: cosine then
    mask_input: str | None
    specs: list  # the model's inputs: where each holds its batch (``spec.batch_axes``)


def build_int8(fp32: Path, final: Path, specs: list[TensorSpec], options: Int8Options,
               say: Callable[[str], None], tokenizer: Path | None = None, unfused: Path | None = None) -> dict:
    """Quantize ``fp32`` into ``final``; returns the quantization report (raises CheckFailed if the gate fails).

    ``tokenizer``: the model's tokenizer.json, which turns ``.txt`` calibration or evaluation sentences into
    inputs (default: the one ``fp32``'s metadata names, beside it). ``unfused``: ``fp32``'s graph before
    onnxruntime's fusions, quantized instead when its fused Attention ops cannot be (their Q/K/V MatMuls are
    quantized there).
    Every temporary file lives in a private folder, removed on success, failure and Ctrl-C."""
    from ..validate import attention_mask_input

    options.validate()
    target = get_target(options.target)
    static = options.calib is not None
    labels = read_labels(options.eval_labels) if options.eval_labels is not None else None
    meta = input_meta(fp32)
    task = options.task or meta.task
    sizes = dict(options.shapes or {})
    text = None
    if is_text_file(options.calib) or is_text_file(options.eval_data):
        from ..text import TextEncoder

        if tokenizer is None and meta.tokenizer:
            tokenizer = fp32.parent / meta.tokenizer
        if tokenizer is None:
            raise InputError(f"{options.calib if is_text_file(options.calib) else options.eval_data}: sentences need "
                             "the model's tokenizer; convert from a Hugging Face folder with a tokenizer.json")
        text = TextEncoder(tokenizer, specs, meta).sized(sizes)
    with tempfile.TemporaryDirectory(prefix="work-", dir=final.parent) as folder:  # in the swept staging folder
        workdir = Path(folder)
        pre = workdir / "preprocessed.onnx"
        report: dict[str, Any] = {"mode": "static" if static else "dynamic", "target": target.name,
                                  "judged_with": JUDGED_WITH, "notes": [], **preprocess(fp32, pre)}
        if task:
            report["task"] = task
        mask_nodes: list[str] = []
        if static:
            odd = unbatched(specs)
            if odd:
                raise InputError(f"static INT8 (--calib) reads samples along each input's first axis, which input "
                                 f"{odd[0].name!r} ({odd[0]}) does not batch on; use dynamic INT8 (drop --calib) "
                                 "with --eval-data")

            source = open_source(options.calib, specs, image=options.image, text=text)
            holdout_size = 0 if options.eval_data is not None else options.eval_samples
            calib, holdout = source.split(options.calib_samples, holdout_size, options.seed)
            mask_nodes, mask_tensors = mask_path(pre)
            if mask_nodes:
                report["notes"].append(f"{len(mask_nodes)} node(s) on the attention-mask path (mask fill values "
                                       "such as -3.4e38 added to attention scores) stay FP32 and out of calibration")
                say(report["notes"][-1])
            say(f"calibrating on {len(calib)} samples of {calib.description} ({options.method}, target {target.name})")
            calibration = calibrate(pre, calib, options.method, target, workdir, say, skip=mask_tensors)
            report.update(method=options.method, calibration_samples=calibration.samples,
                          calibration_seconds=round(calibration.seconds, 3),
                          peak_rss_mb=round(calibration.peak_rss_mb, 1), source=source.description,
                          preprocessing=source.preprocessing)
            feeds, origin = (_read_eval(options, specs, text) if options.eval_data
                             else (stack_samples(holdout, specs=specs),
                                   f"{len(holdout)} held-out samples of {source.name}"))
        else:
            calibration = None
            feeds, origin = (_read_eval(options, specs, text) if options.eval_data
                             else (random_feeds(batched(specs, GENERATED_EVAL_SAMPLES),
                                                GENERATED_EVAL_SAMPLES, options.seed, sizes=sizes, meta=meta),
                                   f"{GENERATED_EVAL_SAMPLES} samples "
                                   + generated_origin(specs, options.seed, meta, sizes)))
        check_finite(feeds, f"the evaluation data ({origin})")
        rows = sample_count(feeds, specs)
        if labels is not None and len(labels) != rows:
            raise InputError(f"--eval-labels has {len(labels)} labels for {rows} evaluation samples; give one per sample")
        gate = _Gate(feeds, origin, labels, classifier=labels is not None or task in CLASSIFIER_TASKS,
                     judge_labels=static or options.eval_data is not None, mask_input=attention_mask_input(specs, meta),
                     specs=specs)
        report["evaluation_data"] = ("eval_data" if options.eval_data is not None else "held-out calib" if static
                                     else "generated")
        rows = None
        attention: dict = {}
        if not static and (gate.mask_input or "Attention" in _ops(pre)):
            probe = random_feeds(batched(specs, ROW_PROBE_SAMPLES), ROW_PROBE_SAMPLES, options.seed + 1,
                                 sizes=sizes, meta=meta)
            if gate.mask_input:  # token models: per-token scales (quantize.scale_rows)
                rows = scale_rows(pre, workdir / "rows.onnx", probe)
                pre = workdir / "rows.onnx"
            attention = prepare_attention(pre, workdir / "attention.onnx", probe, gate.mask_input)
            if attention["quantizable"]:
                pre = workdir / "attention.onnx"
            elif attention["attention_nodes"]:
                fallback = " (quantizing the graph before fusion instead)" if unfused is not None else ""
                report["notes"].append(f"the fused Attention ops cannot be quantized: {attention['reason']}{fallback}")
                say(report["notes"][-1])
                if unfused is not None:
                    attention, pre = {}, workdir / "unfused_preprocessed.onnx"
                    preprocess(unfused, pre)
                    if gate.mask_input:
                        rows = scale_rows(pre, workdir / "unfused_rows.onnx", probe)
                        pre = workdir / "unfused_rows.onnx"

        # Plans, tried in order until one passes the gate: int8 attention (QAttention) first where it applies,
        # then the fused Attention in FP32; per-channel weights, then per-tensor ones for dynamic INT8.
        layouts = [options.per_channel is not False]
        if options.per_channel is None and not static:
            layouts.append(False)  # per tensor, when per channel fails the gate
        fp32_attention = attention.get("quantizable", [])
        plans = ([_Plan(layouts[0], [])] if fp32_attention else []) + [_Plan(p, fp32_attention) for p in layouts]
        attempts: list[_Attempt] = []
        for plan, following in zip(plans, plans[1:] + [None]):
            try:
                attempts.append(_rounds(pre, fp32, workdir, gate, options, target, calibration, plan, mask_nodes, say))
            except ExportError:
                if following is None:
                    raise
                say(f"onnxruntime cannot quantize this graph with {plan.describe()}; trying {following.describe()}")
                continue
            if attempts[-1].accuracy["passed"]:
                break
            if following is not None:
                say(f"{plan.describe()} fail the gate; trying {following.describe()}")
        # the attempt that passed, else the first (per channel: the better one as a rule) for the report
        chosen = next((attempt for attempt in attempts if attempt.accuracy["passed"]), attempts[0])
        candidate, accuracy, excluded = chosen.candidate, chosen.accuracy, chosen.excluded
        report["recipe"] = target.recipe(static, chosen.plan.per_channel)
        if attention.get("attention_nodes"):
            report["recipe"]["attention"] = (
                f"{len(fp32_attention)} fused Attention op(s) as QAttention: int8 Q/K/V projections, inputs smoothed "
                f"per channel (SmoothQuant, alpha {SMOOTHING_ALPHA:g}), the padding mask as mask_index"
                if fp32_attention and not chosen.plan.fp32_attention
                else f"{attention['attention_nodes']} fused Attention op(s) in FP32")
        if rows and rows["scaled_groups"]:
            report["recipe"]["activation_scales"] = (
                f"one per token where a MatMul input has outlier channels (max > {OUTLIER_RATIO:g}x the median "
                f"channel's on {ROW_PROBE_SAMPLES} generated samples): {rows['outlier_channels']} such channel(s) "
                f"through FP32, the rest of the inputs of {rows['scaled_groups']} MatMul group(s) divided by their "
                "per-row max before quantizing")
        if calibration is not None:
            try:
                report["lowest_sqnr_layers"] = [
                    {**layer, "sqnr_db": round(layer["sqnr_db"], 2)}
                    for layer in layer_sqnr(pre, candidate, _worst_samples(gate, accuracy), workdir)[:10]
                ]
            except ExportError as exc:
                report["notes"].append(f"no per-layer SQNR: {exc}")
        else:
            convolutions = sum(count for op, count in _ops(pre).items() if op in ("Conv", "ConvTranspose"))
            if convolutions:
                report["notes"].append(f"dynamic INT8 quantizes MatMul/Gemm only: the {convolutions} convolution(s) "
                                       "stay FP32; give --calib data (a few hundred real inputs) for static INT8, "
                                       "which quantizes them")
                say(report["notes"][-1])
            embeddings = _ops(candidate).get("Gather", 0) and _int8_tables(candidate)
            if embeddings:
                report["recipe"]["embeddings"] = (f"{embeddings} table(s) stored as 8-bit per tensor, dequantized after "
                                                  "the lookup (weight only)")
        accuracy.pop("worst_samples", None)
        report.update(excluded_layers=excluded, rounds=chosen.rounds, accuracy=accuracy,
                      size_fp32_bytes=fp32.stat().st_size, size_int8_bytes=candidate.stat().st_size)
        if not excluded and not _ops(candidate).keys() & QUANTIZED_OPS:
            raise CheckFailed(f"{final.name}: nothing to quantize: none of the model's operators "
                              f"({', '.join(sorted(_ops(pre))) or 'none'}) has an INT8 form here; nothing written, "
                              "ship the FP32 artifact", report)
        if accuracy["passed"] and not _ops(candidate).keys() & QUANTIZED_OPS:
            accuracy.update(passed=False, summary=accuracy["summary"].replace(": passed", "") +
                            ": FAILED (every layer had to stay FP32, so nothing is INT8)")
        if not accuracy["passed"]:
            raise CheckFailed(
                f"{final.name}: the INT8 model fails the accuracy gate after {chosen.rounds} round(s) "
                f"({accuracy['summary']}; {len(excluded)} node(s) kept in FP32); nothing written. "
                f"{_hints(options, accuracy, report)}",
                report,
            )
        report["latency"] = quick_latency(fp32, candidate, target)
        with atomic_path(final) as tmp:
            tmp.write_bytes(candidate.read_bytes())
    return report


@dataclass
class _Plan:
    """How one attempt quantizes: the weight layout, and the fused Attention ops it keeps in FP32."""

    per_channel: bool
    fp32_attention: list[str]

    def describe(self) -> str:
        weights = "per-channel" if self.per_channel else "per-tensor"
        return f"{weights} weights" + (" with FP32 attention" if self.fp32_attention else "")


@dataclass
class _Attempt:
    """One plan taken through the rounds: the last model, its verdict, what stayed FP32."""

    plan: _Plan
    candidate: Path
    accuracy: dict
    excluded: list[str]
    rounds: int


def _rounds(pre: Path, fp32: Path, workdir: Path, gate: _Gate, options: Int8Options, target: Target, calibration,
            plan: _Plan, mask_nodes: list[str], say) -> _Attempt:
    """Quantize, judge, and keep the layers with the lowest SQNR in FP32 until the gate passes: 1, 2, 4...
    more each round, ``options.max_rounds`` rounds at most. Static INT8 ranks tensors by their SQNR against
    FP32 (``layer_sqnr``), dynamic INT8 its MatMuls by the error each adds (``matmul_sqnr``), both on the
    evaluation samples INT8 damaged most."""
    excluded: list[str] = list(plan.fp32_attention)
    label = plan.describe().replace(" ", "_")
    for round_ in range(options.max_rounds + 1):
        candidate = workdir / f"int8_{label}_round{round_}.onnx"
        if calibration is not None:
            quantize_static(pre, calibration.ranges, target, mask_nodes + excluded, candidate, plan.per_channel)
        else:
            quantize_dynamic(pre, target, candidate, plan.per_channel, excluded)
        accuracy = evaluate(fp32, candidate, gate, options)
        say(accuracy["summary"] + ("" if calibration is not None else f" [{plan.describe()}]"))
        if accuracy["passed"] or round_ == options.max_rounds:
            break
        ranking = layer_sqnr if calibration is not None else matmul_sqnr
        try:
            layers = [layer for layer in ranking(pre, candidate, _worst_samples(gate, accuracy), workdir)
                      if not set(layer["nodes"]) <= set(excluded)][: 2**round_]
        except ExportError as exc:  # no ranking, no fallback: the verdict stands
            say(f"no fallback round: {exc}")
            break
        if not layers:
            break
        excluded += [node for layer in layers for node in layer["nodes"] if node not in excluded]
        worst = ", ".join(f"{layer['tensor']} ({layer['sqnr_db']:.1f} dB)" for layer in layers)
        say(f"keeping the nodes around the lowest-SQNR tensors {worst} in FP32 and quantizing again")
    return _Attempt(plan, candidate, accuracy, excluded, round_ + 1)


def _worst_samples(gate: _Gate, accuracy: dict) -> list[dict]:
    """The evaluation samples INT8 damaged most (lowest cosine), one by one: where the SQNR is measured."""
    order = accuracy.get("worst_samples") or range(sample_count(gate.feeds, gate.specs))
    return [select_rows(gate.feeds, gate.specs, slice(i, i + 1)) for i in list(order)[:SQNR_SAMPLES]]


def _int8_tables(path: Path) -> int:
    """How many Gather tables the INT8 model stores in 8 bits (dequantized after the lookup)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    int8 = {i.name for i in graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    return sum(1 for n in graph.node if n.op_type == "Gather" and n.input[0] in int8)


def _hints(options: Int8Options, accuracy: dict, report: dict) -> str:
    """What can change the verdict, and only that."""
    static = options.calib is not None
    hints = []
    if report.get("evaluation_data") == "generated":
        hints.append("real --eval-data (generated inputs judge a model on data it never sees)")
    if static:
        hints.append("more or more representative --calib data")
        others = [m for m in METHODS if m != options.method]
        hints.append(f"--calib-method {' or '.join(others)}")
    else:
        hints.append("--calib data for static INT8")
    if options.per_channel is False:
        hints.append("per-channel weights (drop per_channel=False)")
    if accuracy["judged_on"] == "cosine":
        hints.append(f"a lower --min-cosine (now {options.min_cosine:g}) if that error is acceptable")
    else:
        hints.append(f"a looser --max-accuracy-drop (now {options.max_accuracy_drop:g})")
    return f"Try {', '.join(hints[:-1])} or {hints[-1]}"


def _read_eval(options: Int8Options, specs: list[TensorSpec], text) -> tuple[dict, str]:
    """--eval-data as one batch per input, read like calibration data (images preprocessed, sentences
    tokenized), and where it came from."""
    image = options.image if Path(str(options.eval_data)).is_dir() else None  # the options of an image folder
    return read_feeds(options.eval_data, specs, image=image, text=text), f"{options.eval_data}"


def _ops(path: Path) -> Counter:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def evaluate(fp32: Path, int8: Path, gate: _Gate, options: Int8Options) -> dict:
    """INT8 against FP32 on the evaluation inputs: accuracy drop or label agreement (classifiers), cosine and
    max error; the verdict. Models that are not classifiers, and every model on generated inputs, are judged
    on the lowest cosine of one sample's outputs (on real tokens for sequence outputs of a masked model).
    The INT8 model runs with exact int8 arithmetic (``targets.judging_runtime``): the same verdict on every CPU."""
    from ..runtimes.onnxrt import OnnxRuntime
    from ..validate import compare_outputs, output_masks, row_cosines, run_all, valid_positions

    with OnnxRuntime(fp32) as reference, judging_runtime(int8) as candidate:
        expected, got = run_all(reference, gate.feeds), run_all(candidate, gate.feeds)
        masks = output_masks(reference, gate.feeds, gate.mask_input) if gate.mask_input else {}
    rows = sample_count(gate.feeds, gate.specs)
    check = compare_outputs(expected, got, rows, precision="int8", inputs_from=gate.origin, masks=masks,
                            classifier=gate.classifier)
    floats = [o for o in check.outputs if o.cosine is not None]
    integers = [o.label_agreement for o in check.outputs if o.label_agreement is not None]
    agreement = min(integers + [o.top1_agreement for o in floats if o.top1_agreement is not None], default=None)
    result = {"samples": check.samples, "inputs_from": gate.origin,
              "cosine": min((o.min_row_cosine for o in floats), default=None),
              "cosine_overall": min((o.cosine for o in floats), default=None),
              "max_abs": max((o.max_abs for o in floats), default=None), "label_agreement": agreement,
              "masked_outputs": sorted(masks)}
    parts = [f"INT8 vs FP32 on {check.samples} samples ({gate.origin})"]
    if masks:
        parts.append(f"{', '.join(sorted(masks))} on real tokens only ({gate.mask_input})")
    if gate.labels is not None:
        accuracy_fp32, accuracy_int8 = (float((predictions(o) == gate.labels).mean()) for o in (expected, got))
        drop = 100 * (accuracy_fp32 - accuracy_int8)
        result.update(accuracy_fp32=accuracy_fp32, accuracy_int8=accuracy_int8, accuracy_drop_points=drop)
        result.update(judged_on="accuracy", passed=drop <= options.max_accuracy_drop)
        parts.append(f"accuracy {accuracy_fp32:.2%} -> {accuracy_int8:.2%} (drop {drop:.2f} points, limit "
                     f"{options.max_accuracy_drop:g})")
    elif agreement is not None and gate.judge_labels and (gate.classifier or not floats):
        lost = 100 * (1 - agreement)
        result.update(judged_on="label agreement", passed=lost <= options.max_accuracy_drop)
        parts.append(f"labels agree {agreement:.2%} ({lost:.2f} points lost, limit {options.max_accuracy_drop:g})")
    else:
        result.update(judged_on="cosine", min_cosine=options.min_cosine,
                      passed=result["cosine"] is not None and result["cosine"] >= options.min_cosine)
    if result["cosine"] is not None:
        floor = f" (floor {options.min_cosine:g})" if result["judged_on"] == "cosine" else ""
        parts.append(f"lowest sample cosine {result['cosine']:.5f}{floor}")
        parts.append(f"max abs error {result['max_abs']:.3g}")
    result["summary"] = ", ".join(parts) + (": passed" if result["passed"] else ": FAILED")
    if not result["passed"] and result["judged_on"] != "cosine" and check.samples * options.max_accuracy_drop < 100:
        result["summary"] += (f" (with {check.samples} samples one disagreement is {100 / check.samples:.2g} points: "
                              "give more --eval-data or calibration data for a finer gate)")
    per_row = [row_cosines(np.asarray(expected[o.name]), np.asarray(got[o.name]),
                           valid_positions(np.shape(expected[o.name]), masks.get(o.name)))
               for o in floats if np.ndim(expected[o.name]) and len(expected[o.name]) == rows]
    if per_row:
        result["worst_samples"] = [int(i) for i in np.argsort(np.min(per_row, axis=0), kind="stable")]
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
        batch = fixed_batch(runtime.inputs) or 1
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
