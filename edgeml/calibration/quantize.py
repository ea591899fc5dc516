"""INT8 quantization with onnxruntime.quantization: static Q/DQ from calibration data, or dynamic without.

One pipeline serves every target: the Q/DQ ONNX it writes runs on ONNX Runtime's CPU EP as it is (and is
checked there) and is what TensorRT 11 builds from (explicit quantization). The types, symmetry and weight
bits come from the INT8 target (``targets.py``), never from the machine that quantizes.

Calibration is streamed: the source yields one sample at a time and ranges (or histograms) are
accumulated chunk by chunk, so memory does not grow with the number of samples. Calibrating once gives
the ranges; quantizing again (to keep the layers that hurt accuracy most in FP32) reuses them.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..datafiles import read_npy
from ..errors import EdgeMLError, ExportError, InputError, first_line, require
from ..quiet import quiet
from ..readable import regular_file
from .targets import Target, exact_copy

METHODS = ("minmax", "entropy", "percentile")
#: Samples run through the calibration model per pass: memory is bounded by this, not by the sample count.
CHUNK = 16
#: Ops the dynamic quantizer touches: MatMul/Gemm-heavy models (MLPs, transformers) gain; ConvInteger with
#: int8 weights has no CPU kernel, so convolutions stay FP32. Gather on a weight (an embedding table) is stored
#: as int8 and dequantized after the lookup: weight-only, it shrinks the file and computes the same everywhere.
DYNAMIC_OPS = ["MatMul", "Gemm", "Attention", "LSTM", "GRU", "Gather"]
#: A small float constant this large (or infinite) fills masked positions: finfo.min, -inf, -1e9, -1e4.
MASK_FILL = 1e4
#: onnxruntime's fused attention ops: inputs 3 on (mask, past state, attention bias) carry the mask.
FUSED_ATTENTION = ("Attention", "MultiHeadAttention", "GroupQueryAttention")


@dataclass
class Calibration:
    """What calibration produced: the ranges, and how it went."""

    ranges: Any
    samples: int
    seconds: float
    peak_rss_mb: float


class _StreamReader:
    """A CalibrationDataReader over an iterator of samples, handing out a bounded chunk per pass."""

    def __init__(self, samples: Iterator[dict]):
        self._samples = samples
        self._left = 0

    def allow(self, count: int) -> None:
        self._left = count

    def get_next(self):
        if self._left <= 0:
            return None
        self._left -= 1
        return next(self._samples, None)


def _reader(samples: Iterator[dict]):
    """A ``_StreamReader`` that is also onnxruntime's CalibrationDataReader (imported only when quantizing)."""
    from onnxruntime.quantization import CalibrationDataReader

    return type("StreamReader", (_StreamReader, CalibrationDataReader), {})(samples)


def peak_rss_mb(reset: bool = False) -> float:
    """Peak resident memory in MB. On Linux ``reset=True`` first lowers the peak mark to the current RSS
    (/proc/self/clear_refs), so that a later call measures the peak of what ran in between; elsewhere it
    is the process's peak so far."""
    import resource
    import sys

    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def preprocess(fp32: Path, out: Path) -> dict:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimization), then unique
    node names, which layer exclusion needs. Falls back step by step and says what ran.

    It runs inside ``out``'s folder: where symbolic shape inference gives up, onnxruntime saves
    ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` into the current directory."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, out = Path(fp32).resolve(), Path(out).resolve()
    record = {"pre_process": "quant_pre_process"}
    previous = os.getcwd()
    os.chdir(out.parent)
    try:
        with quiet():
            quant_pre_process(str(fp32), str(out))
    except Exception:  # noqa: BLE001 - symbolic shape inference fails on some dynamic graphs
        try:
            with quiet():
                quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
            record["pre_process"] = "quant_pre_process without symbolic shape inference"
        except Exception:  # noqa: BLE001
            out.write_bytes(fp32.read_bytes())
            record["pre_process"] = "none (quant_pre_process failed on this graph)"
    finally:
        os.chdir(previous)
    model = onnx.load(str(out))
    seen = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    onnx.save(model, str(out))
    return record


def mask_path(model: Path) -> tuple[list[str], set[str]]:
    """The nodes and tensors that carry an attention mask's fill value (``MASK_FILL``) into a Softmax: the
    ``Where(mask, 0, -3.4e38)`` and the ``Add`` of it to the attention scores. Their values span 1e38, so no
    INT8 range fits them (and histogram calibration cannot even bin them): they and the Softmax that reads
    them stay FP32 and out of calibration; the Softmax output, in [0, 1], is quantized as usual."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model), load_external_data=False).graph
    constants = [(i.name, i) for i in graph.initializer]
    constants += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    tainted = set()
    for name, tensor in constants:
        if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE) \
                and 0 < np.prod(tensor.dims, dtype=np.int64) <= 16 and not tensor.external_data:
            values = numpy_helper.to_array(tensor).astype(np.float64)
            if (~np.isfinite(values) | (np.abs(values) >= MASK_FILL)).any():
                tainted.add(name)
    for node in graph.node:  # forward from the fill constants (nodes are in topological order)
        if node.op_type != "Softmax" and tainted.intersection(node.input):
            tainted.update(node.output)
    into_softmax = set()
    for node in reversed(graph.node):  # backward from the Softmax inputs and fused attentions' masks
        if node.op_type == "Softmax":
            into_softmax.add(node.input[0])
        elif node.op_type in FUSED_ATTENTION:
            into_softmax.update(node.input[3:])
        elif into_softmax.intersection(node.output):
            into_softmax.update(node.input)
    path = tainted & into_softmax
    nodes = [n.name for n in graph.node if path.intersection(n.output) or (n.op_type == "Softmax" and n.input[0] in path)]
    return nodes, path


def calibrate(model: Path, samples, method: str, target: Target, workdir: Path,
              progress: Callable[[str], None], skip: set[str] = frozenset()) -> Calibration:
    """Run ``samples`` (a CalibrationSource) through the model in chunks and compute the tensor ranges of
    every tensor but ``skip`` (``mask_path``'s).

    NaN or Inf in a sample is refused by name: onnxruntime would turn it into a NaN scale."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    total = len(samples)
    peak_rss_mb(reset=True)
    start = time.perf_counter()
    with quiet(), onnxruntime_failure(f"{method} calibration of {Path(model).name}",
                                      "try dynamic INT8 (drop --calib), or ship the FP32 artifact"):
        calibrator = create_calibrator(model, _op_types(), augmented_model_path=str(workdir / "augmented.onnx"),
                                       calibrate_method=methods[method],
                                       extra_options={"symmetric": target.symmetric_activations})
    if getattr(calibrator, "tensors_to_calibrate", None) is not None:  # histograms: never binned
        calibrator.tensors_to_calibrate -= set(skip)
    reader = _reader(finite_samples(samples, f"calibration data {samples.name}"))
    done = 0
    while done < total:
        count = min(CHUNK, total - done)
        reader.allow(count)
        try:
            with quiet():
                calibrator.collect_data(reader)
        except (ValueError, *_onnxruntime_errors()) as exc:
            if "No data is collected" not in str(exc):
                raise _calibration_failed(method, samples, exc) from exc
            raise InputError(f"the calibration source ran dry after {done} of {total} samples: a function source "
                             "must return a fresh iterable on every call (a generator function, not a generator)") from exc
        done += count
        progress(f"calibrated on {done}/{total} samples")
    try:
        with quiet():
            ranges = calibrator.compute_data()
    except Exception as exc:  # noqa: BLE001 - only onnxruntime runs here
        raise _calibration_failed(method, samples, exc) from exc
    for name in skip:  # minmax computes them anyway
        if name in ranges:
            del ranges.data[name]
    _check_ranges(ranges, samples)
    return Calibration(ranges, total, time.perf_counter() - start, peak_rss_mb())


def check_finite(arrays: dict[str, np.ndarray], what: str) -> None:
    """NaN or Inf in a float input, refused by name: onnxruntime would make a NaN scale of it, and NaN
    outputs compare equal to nothing."""
    bad = [name for name, value in arrays.items() if value.dtype.kind == "f" and not np.isfinite(value).all()]
    if bad:
        raise InputError(f"{what} holds NaN or Inf in input {', '.join(map(repr, bad))}; INT8 needs finite "
                         "values: clean or drop those samples")


def finite_samples(samples, what: str) -> Iterator[dict]:
    for sample in samples:
        check_finite(sample, what)
        yield sample


def _onnxruntime_errors() -> tuple[type, ...]:
    """onnxruntime's own exception types (Fail, InvalidArgument...): a session run on a sample can raise them."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(value for value in vars(state).values() if isinstance(value, type) and issubclass(value, Exception))


def _calibration_failed(method: str, samples, exc: Exception) -> InputError:
    others = " or ".join(m for m in METHODS if m != method)
    return InputError(f"{method} calibration on {samples.name} failed in onnxruntime ({first_line(exc)}); "
                      f"try --calib-method {others}, or check that the model computes finite values on this data")


def _check_ranges(ranges, samples) -> None:
    """Finite inputs can still give NaN/Inf activations (an overflow, log of a negative): name the tensor."""
    for name, data in ranges.items():
        if not np.isfinite(np.asarray(data.range_value, dtype=np.float64)).all():
            raise InputError(f"the model computes NaN or Inf at tensor {name!r} on the calibration data "
                             f"{samples.name}; INT8 needs finite activations: check the data and the model")


def _op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def quantize_static(model: Path, ranges, target: Target, exclude: list[str], out: Path, per_channel: bool = True) -> None:
    """Write a Q/DQ model with the target's recipe: INT8 weights per channel, the target's activations.
    x86 takes uint8 activations (U8S8), the pair its integer dot products (VNNI vpdpbusd, AVX2 vpmaddubsw)
    take natively: 3.1x faster than S8S8 on a ResNet-18 here, where S8S8 was slower than FP32."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    activations = QuantType.QInt8 if target.activations == "int8" else QuantType.QUInt8
    extra = {"ActivationSymmetric": target.symmetric_activations, "WeightSymmetric": True}
    with quiet(), onnxruntime_failure(f"static INT8 quantization of {Path(model).name}",
                                      "try dynamic INT8 (drop --calib), or ship the FP32 artifact"):
        quantizer = QDQQuantizer(load_model_with_shape_infer(model), per_channel, target.reduce_range, QuantType.QInt8,
                                 activations, ranges, [], list(exclude), _op_types(), extra)
        quantizer.quantize_model()
        quantizer.model.save_model_to_file(str(out))  # sorts the graph topologically, as onnx requires


#: Suffix of the small FP32 MatMuls ``scale_rows`` adds for outlier channels: never quantized.
OUTLIER_MATMUL = ".outlier_rows"
#: An input channel is an outlier when its largest |value| exceeds this many times the median channel's.
OUTLIER_RATIO = 4.0
#: At most this many outlier channels per MatMul input go through FP32.
MAX_OUTLIERS = 8


def _weight_matmuls(graph) -> dict[str, list]:
    """MatMuls with a 2-D float weight, grouped by their activation input (Q, K and V share one)."""
    import onnx

    weights = {i.name: i for i in graph.initializer}
    groups: dict[str, list] = {}
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2 and weight.data_type == onnx.TensorProto.FLOAT:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def scale_rows(model: Path, out: Path, feeds: dict) -> dict:
    """Rewrite ``model`` so that dynamic INT8 quantizes each token (row) on its own scale. Exact in FP32.

    Dynamic INT8 gives a MatMul's input one scale per call: in a transformer a few tokens ([CLS], [SEP]) and
    a few channels (channel 99 of MiniLM's LayerNorms reaches 28 where the median channel peaks at 1.7) set
    it, and every other value is rounded on a coarse grid. Before each weight MatMul group whose input has
    outlier channels (max |x| on ``feeds`` over ``OUTLIER_RATIO`` x the median channel's) this sends those
    channels through a small FP32 MatMul (LLM.int8()-style), divides the rest by its per-row max |x| and
    multiplies the outputs back. Groups without outliers are left alone: the rewrite costs a few elementwise
    ops per group, and on MiniLM-L6 rescaling those 7 of 24 groups (attention outputs, the first Q/K/V) gains
    nothing (lowest sentence cosine 0.9929 without, 0.9921 with). With 8-bit weights the lowest sentence
    cosine goes from 0.94 to 0.99. The quantized arithmetic is unchanged (DynamicQuantizeLinear,
    MatMulInteger), so it is judged exactly as before. No-op NaN guards after Softmax go too
    (``_drop_nan_guards``)."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(model))
    graph = proto.graph
    guards = _drop_nan_guards(graph)
    groups = _weight_matmuls(graph)
    maxima = _channel_maxima(proto, list(groups), feeds) if groups else {}
    found = {tensor: _outlier_channels(maxima[tensor]) for tensor in groups}
    found = {tensor: channels for tensor, channels in found.items() if len(channels)}
    if not found:
        out.write_bytes(proto.SerializeToString())
        return {"scaled_groups": 0, "outlier_channels": 0, "nan_guards_dropped": guards}
    weights = {i.name: i for i in graph.initializer}

    def constant(name: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    eps = constant("rows.eps", np.float32(1e-30))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 18)
    axes = {"inputs": [constant("rows.axes", np.array([-1], np.int64))]} if opset >= 18 else {"axes": [-1]}  # input from 18
    after: dict[str, list] = {}  # tensor -> nodes that go right after its producer
    for tensor, channels in found.items():
        prefix, source = f"{tensor}.rows", f"{tensor}.rows.main"
        keep = np.ones(maxima[tensor].shape[0], np.float32)
        keep[channels] = 0
        added = [helper.make_node("Mul", [tensor, constant(f"{prefix}.keep", keep)], [source], name=f"{prefix}.mask"),
                 helper.make_node("Gather", [tensor, constant(f"{prefix}.channels", channels.astype(np.int64))],
                                  [f"{prefix}.outliers"], axis=-1, name=f"{prefix}.gather"),
                 helper.make_node("Abs", [source], [f"{prefix}.abs"], name=f"{prefix}.abs"),
                 helper.make_node("ReduceMax", [f"{prefix}.abs", *axes.get("inputs", [])], [f"{prefix}.peak"], keepdims=1,
                                  name=f"{prefix}.peak", **{k: v for k, v in axes.items() if k != "inputs"}),
                 helper.make_node("Max", [f"{prefix}.peak", eps], [f"{prefix}.scale"], name=f"{prefix}.scale"),
                 helper.make_node("Div", [source, f"{prefix}.scale"], [f"{prefix}.x"], name=f"{prefix}.x")]
        after[tensor] = added
        for node in groups[tensor]:
            result = node.output[0]
            node.input[0], node.output[0] = f"{prefix}.x", f"{result}.rows"
            rows = numpy_helper.to_array(weights[node.input[1]])[channels]
            after[f"{result}.rows"] = [
                helper.make_node("Mul", [f"{result}.rows", f"{prefix}.scale"], [f"{result}.scaled"],
                                 name=f"{node.name}.rescale"),
                helper.make_node("MatMul", [f"{prefix}.outliers", constant(f"{node.name}{OUTLIER_MATMUL}", rows)],
                                 [f"{result}.outliers"], name=f"{node.name}{OUTLIER_MATMUL}"),
                helper.make_node("Add", [f"{result}.scaled", f"{result}.outliers"], [result], name=f"{node.name}.add")]
    order = [n for name in [i.name for i in graph.input] for n in after.pop(name, [])]
    for node in graph.node:
        order.append(node)
        for name in node.output:
            order += after.pop(name, [])
    del graph.node[:]
    graph.node.extend(order)
    out.write_bytes(proto.SerializeToString())
    return {"scaled_groups": len(found), "outlier_channels": sum(map(len, found.values())),
            "nan_guards_dropped": guards}


def _drop_nan_guards(graph) -> int:
    """Remove ``Where(IsNaN(p), c, p)`` after a Softmax ``p`` (torch's SDPA export adds it for rows whose every
    key is masked with -inf) when no float constant of the graph is infinite: with a finite mask fill
    (finfo.min) the Softmax of finite scores is never NaN, so the guard is a no-op, and it is not cheap:
    two full passes over every attention matrix, about 10% of MiniLM-L6's INT8 time at sequence 128."""
    import onnx
    from onnx import numpy_helper

    constants = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                                           if a.name == "value"]
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    if any(t.data_type in floats and not t.external_data and not np.isfinite(numpy_helper.to_array(t)).all()
           for t in constants):
        return 0
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    rename, dropped = {}, []
    for node in graph.node:
        test = producers.get(node.input[0]) if node.op_type == "Where" else None
        if test is not None and test.op_type == "IsNaN" and test.input[0] == node.input[2] \
                and getattr(producers.get(node.input[2]), "op_type", None) == "Softmax" \
                and readers[test.output[0]] == 1 and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[2]
            dropped += [node, test]
    for node in dropped:
        graph.node.remove(node)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    return len(rename)


def _outlier_channels(peak: np.ndarray) -> np.ndarray:
    """The channels whose max |x| exceeds ``OUTLIER_RATIO`` x the median channel's, the largest
    ``MAX_OUTLIERS`` at most, in order."""
    top = np.argsort(peak)[::-1][:MAX_OUTLIERS]
    return np.sort(top[peak[top] > OUTLIER_RATIO * np.median(peak)])


def _channel_maxima(proto, tensors: list[str], feeds: dict) -> dict[str, np.ndarray]:
    """Largest |value| of each channel (last axis) of ``tensors`` on ``feeds``, with onnxruntime."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in present)
    from ..runtimes.onnxrt import session_options

    with onnxruntime_failure("measuring activation ranges for INT8 (per-row scales, SmoothQuant)", "ship the FP32 artifact"):
        session = ort.InferenceSession(probe.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
        values = session.run(tensors, feeds)
    return {t: np.abs(v.reshape(-1, v.shape[-1])).max(axis=0) for t, v in zip(tensors, values)}


#: SmoothQuant's migration strength for the inputs of fused Attention (``prepare_attention``): 0.5 is the
#: paper's default; on MiniLM-L6 0.65 gave the best lowest sentence cosine of 0.5, 0.65 and 0.8.
SMOOTHING_ALPHA = 0.65
#: A rewrite of the FP32 graph is kept only when its outputs stay this close to the graph's own on the
#: probe inputs (times each output's largest |value| when that is over 1): it must compute the same model.
REWRITE_TOLERANCE = 1e-4


def prepare_attention(model: Path, out: Path, probe: dict, mask_input: str | None) -> dict:
    """Make onnxruntime's fused Attention ops quantizable (QAttention: int8 Q/K/V projections with the
    attention itself in one kernel), exactly in FP32. onnxruntime's quantizer skips an Attention with
    ``qkv_hidden_sizes`` and, worse, drops its ``attention_bias`` input (the padding mask of onnxscript's
    fusion) without a word. So, on a copy:

    - ``qkv_hidden_sizes`` goes when Q, K and V have one size (the default it states again);
    - the attention bias becomes ``mask_index``, the model's own 0/1 attention mask, which QAttention reads;
    - SmoothQuant (Xiao et al. 2023): QAttention quantizes its input with one scale per call, and a few
      channels of a BERT's LayerNorm output are 10x the rest. Each input channel j is divided by
      ``s_j = max|x_j|^a / max|W_j|^(1-a)`` (``SMOOTHING_ALPHA``; maxima on ``probe``) and the weight's row j
      multiplied by it: the same product, with the outliers moved into per-channel weight scales.

    The copy is written to ``out`` only when its outputs match ``model``'s on ``probe`` (which holds padded
    samples, so a wrong mask shows). Returns the Attention node names made quantizable in ``out``, and
    ``unsafe``: Attention nodes that onnxruntime's quantizer would damage and must stay FP32."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(model))
    graph = proto.graph
    attentions = [n for n in graph.node if n.op_type == "Attention" and n.domain == "com.microsoft"]
    unsafe = [n.name for n in attentions if _carries_bias(n)]
    record = {"attention_nodes": len(attentions), "quantizable": [], "unsafe": unsafe}
    if not attentions:
        return record
    weights = {i.name: i for i in graph.initializer}
    candidates = [n for n in attentions if n.input[1] in weights and len(weights[n.input[1]].dims) == 2
                  and weights[n.input[1]].data_type == onnx.TensorProto.FLOAT
                  and not any(n.input[3:5]) and not any(n.input[6:])  # no mask index, past state or length yet
                  and (not _carries_bias(n) or mask_input is not None) and _equal_qkv(n)]
    if not candidates:
        reason = ("they take the padding mask as an attention bias and the model has no attention-mask input"
                  if mask_input is None and unsafe else "none has a 2-D float weight and one Q/K/V size")
        return {**record, "reason": reason}
    maxima = _channel_maxima(proto, sorted({n.input[0] for n in candidates}), probe)
    cast = f"{mask_input}.mask_index" if mask_input else None
    sharing: dict[str, list] = {}  # weight -> the Attention nodes that read it (ALBERT shares one across layers)
    for node in candidates:
        sharing.setdefault(node.input[1], []).append(node)
    before: dict[str, list] = {}  # node output -> nodes inserted right before the node
    for name, nodes in sharing.items():
        weight = numpy_helper.to_array(weights[name]).astype(np.float64)
        x_max = np.max([maxima[n.input[0]] for n in nodes], axis=0).astype(np.float64)
        w_max = np.abs(weight).max(axis=1)
        scale = np.where((x_max > 0) & (w_max > 0),
                         x_max ** SMOOTHING_ALPHA / np.maximum(w_max, 1e-30) ** (1 - SMOOTHING_ALPHA), 1.0)
        scale = np.clip(scale, 1e-4, 1e4)
        smoothed, inverse = f"{name}.smoothed", f"{name}.smoothing"  # one copy per weight, however many read it
        graph.initializer.extend([numpy_helper.from_array((weight * scale[:, None]).astype(np.float32), smoothed),
                                  numpy_helper.from_array((1 / scale).astype(np.float32), inverse)])
        for node in nodes:
            key = node.output[0]  # unique, unlike node names
            before[key] = [helper.make_node("Mul", [node.input[0], inverse], [f"{key}.smoothed_input"],
                                            name=f"{key}.smooth")]
            node.input[0], node.input[1] = f"{key}.smoothed_input", smoothed
    for node in candidates:
        for attribute in [a for a in node.attribute if a.name == "qkv_hidden_sizes"]:
            node.attribute.remove(attribute)
        if _carries_bias(node):
            inputs = list(node.input) + [""] * max(0, 6 - len(node.input))
            inputs[3], inputs[5] = cast, ""
            while inputs and not inputs[-1]:
                inputs.pop()
            del node.input[:]
            node.input.extend(inputs)
    order = []
    if any(cast in n.input for n in candidates):
        order.append(helper.make_node("Cast", [mask_input], [cast], to=onnx.TensorProto.INT32, name=cast))
    for node in graph.node:
        order += before.get(node.output[0], []) + [node]
    del graph.node[:]
    graph.node.extend(order)
    _drop_unused_initializers(graph)
    if not _same_outputs(model, proto, probe):
        return {**record, "reason": "the rewritten graph does not compute the same outputs; Attention stays FP32"}
    out.write_bytes(proto.SerializeToString())
    names = [n.name for n in candidates]
    return {**record, "quantizable": names, "unsafe": [n for n in unsafe if n not in names]}


def _carries_bias(node) -> bool:
    """An Attention with an input past 4 (``attention_bias``, ``past_sequence_length``), which QAttention
    does not have: onnxruntime's quantizer would drop it."""
    return any(node.input[5:])


def _equal_qkv(node) -> bool:
    sizes = next((list(a.ints) for a in node.attribute if a.name == "qkv_hidden_sizes"), None)
    return sizes is None or len(set(sizes)) == 1


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _same_outputs(model: Path, rewritten, feeds: dict) -> bool:
    """Whether ``rewritten`` (a ModelProto) computes ``model``'s outputs on ``feeds``, up to float rounding."""
    from ..runtimes.onnxrt import OnnxRuntime

    with onnxruntime_failure("checking the Attention rewrite for INT8", "ship the FP32 artifact"), \
            OnnxRuntime(model) as original:
        expected = original.run(feeds)
    try:
        with OnnxRuntime(rewritten.SerializeToString()) as candidate:
            got = candidate.run(feeds)
    except InputError:  # a rewrite onnxruntime cannot load or run is simply not used
        return False
    return all(np.shape(a) == np.shape(got[name])
               and np.allclose(a, got[name], rtol=0, atol=REWRITE_TOLERANCE * max(1.0, float(np.abs(a).max(initial=0))))
               for name, a in expected.items())


def quantize_dynamic(model: Path, target: Target, out: Path, per_channel: bool = True, exclude=()) -> None:
    """Weights INT8, activations quantized at run time: the usual choice for MLPs and transformers on CPUs.
    Per-channel weights (one scale per output column): on MiniLM-L6 the lowest sentence-embedding cosine
    against FP32 is 0.92 where one scale per tensor gives 0.48. Embedding tables (Gather) are stored in 8
    bits and dequantized after the lookup: the file shrinks about 4x (MiniLM: 91 MB -> 23 MB)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize_dynamic

    with quiet(), onnxruntime_failure(f"dynamic INT8 quantization of {Path(model).name}",
                                      "try --calib data for static INT8, or ship the FP32 artifact"):
        ort_quantize_dynamic(model, out, op_types_to_quantize=DYNAMIC_OPS, per_channel=per_channel,
                             reduce_range=target.reduce_range, weight_type=QuantType.QInt8,
                             nodes_to_exclude=list(exclude) + _never_quantized(model))


def _never_quantized(model: Path) -> list[str]:
    """The FP32 side MatMuls ``scale_rows`` added (quantizing them would undo its point), and fused Attention
    ops with an attention bias, which onnxruntime's quantizer would drop (``prepare_attention``)."""
    return [node.name for node in _load_graph(model).node
            if node.name.endswith(OUTLIER_MATMUL) or (node.op_type == "Attention" and _carries_bias(node))]


@contextmanager
def onnxruntime_failure(what: str, fix: str):
    """onnxruntime's quantization tools raise bare exceptions on graphs they do not handle: one ExportError
    naming the step and the way out (never an internal error); edgeml's own errors pass through."""
    try:
        yield
    except EdgeMLError:
        raise
    except Exception as exc:  # noqa: BLE001 - ValueError, RuntimeError, onnxruntime's pybind errors...
        raise ExportError(f"{what} failed in onnxruntime ({type(exc).__name__}: {first_line(exc)}); {fix}") from exc


def _activations(paths: dict[str, Path], samples: list[dict], workdir: Path) -> dict[str, dict]:
    """Every intermediate tensor of each model in ``paths`` (label -> file) on ``samples``, flattened per
    sample: onnxruntime's qdq_loss_debug."""
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    activations = {}
    for label, path in paths.items():
        augmented = workdir / f"activations_{label}.onnx"
        with quiet(), onnxruntime_failure("the per-layer error analysis", "the layers cannot be ranked"):
            modify_model_output_intermediate_tensors(str(path), str(augmented))
            reader = _reader(iter(samples))
            reader.allow(len(samples))
            activations[label] = collect_activations(str(augmented), reader)
    return activations


def _graph_links(model: Path):
    import onnx

    graph = onnx.load(str(model)).graph
    producers = {out: node.name for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    return graph, producers, consumers


def layer_sqnr(fp32: Path, int8: Path, samples: list[dict], workdir: Path) -> list[dict]:
    """Per-tensor SQNR (dB) between FP32 and Q/DQ activations, lowest (worst) first: onnxruntime's
    qdq_loss_debug on a few held-out samples. Each tensor comes with the nodes that produce and consume it:
    keeping a tensor in FP32 means keeping its consumers (where its Q/DQ pair sits) in FP32 too. The Q/DQ
    model runs with exact integer products (``targets.exact_copy``), as the gate judges it."""
    from onnxruntime.quantization.qdq_loss_debug import compute_activation_error, create_activation_matching

    _, producers, consumers = _graph_links(fp32)
    exact = workdir / "sqnr_exact.onnx"
    exact.write_bytes(exact_copy(int8))
    activations = _activations({"float": fp32, "qdq": exact}, samples, workdir)
    matching = create_activation_matching(activations["qdq"], activations["float"])
    errors = compute_activation_error(matching)
    # Ranked by the error against FP32 (xmodel_err). The tensor's own Q/DQ noise (qdq_err, also reported)
    # was tried and misled on tests/test_int8.py's outlier model: it pointed at the Relu before the damaged
    # layer, and three rounds kept everything in FP32 instead of the layers around the outlier.
    layers = [{"tensor": name, "node": producers[name], "nodes": [producers[name], *consumers.get(name, [])],
               "sqnr_db": float(err["xmodel_err"]), "qdq_sqnr_db": float(err["qdq_err"])}
              for name, err in errors.items() if "xmodel_err" in err and name in producers]
    return sorted(layers, key=lambda layer: layer["sqnr_db"])


def matmul_sqnr(fp32: Path, int8: Path, samples: list[dict], workdir: Path) -> list[dict]:
    """Per-layer SQNR (dB) of a dynamic INT8 model, lowest (worst) first: for each quantized MatMul/Gemm, its
    INT8 output against its FP32 weights applied to the same (INT8 model's) input, on ``samples``. This is
    the error the layer itself adds, not the error it inherits; on MiniLM it finds 8 of the 10 MatMuls whose
    quantization alone hurts the sentence embeddings most. Run with exact integer products, as the gate."""
    from onnx import numpy_helper

    graph, _, _ = _graph_links(fp32)
    weights = {i.name: i for i in graph.initializer}
    exact = workdir / "sqnr_exact.onnx"
    exact.write_bytes(exact_copy(int8))
    quantized = {n.name for n in _load_graph(int8).node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")}
    activations = _activations({"int8": exact}, samples, workdir)["int8"]
    layers = []
    for node in graph.node:
        attributes = {a.name: a for a in node.attribute}
        if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in weights or not _quantized(node, quantized) \
                or any(attributes[a].i for a in ("transA",) if a in attributes):
            continue
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
        if w.ndim != 2 or node.input[0] not in activations or node.output[0] not in activations:
            continue
        if node.op_type == "Gemm":
            w = w.T if "transB" in attributes and attributes["transB"].i else w
            w = w * (attributes["alpha"].f if "alpha" in attributes else 1.0)
        signal = noise = 0.0
        for x, y in zip(activations[node.input[0]], activations[node.output[0]]):
            expected = x.reshape(-1, w.shape[0]).astype(np.float64) @ w
            if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] in weights:
                expected = expected + numpy_helper.to_array(weights[node.input[2]]) * (
                    attributes["beta"].f if "beta" in attributes else 1.0)
            signal += float((expected ** 2).sum())
            noise += float(((y.reshape(expected.shape) - expected) ** 2).sum())
        sqnr = 10 * np.log10(signal / noise) if noise > 0 and signal > 0 else float("inf")
        layers.append({"tensor": node.output[0], "node": node.name, "nodes": [node.name], "sqnr_db": float(sqnr)})
    return sorted(layers, key=lambda layer: layer["sqnr_db"])


def _load_graph(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def _quantized(node, quantized_names: set[str]) -> bool:
    """Whether the dynamic quantizer replaced ``node``: it names the MatMulInteger ``<node>_quant``."""
    return f"{node.name}_quant" in quantized_names


def read_labels(path: str | Path) -> np.ndarray:
    """Integer class labels from a .npy (never unpickled), or a one-column .csv/.txt."""
    path = regular_file(path, "--eval-labels file")
    if path.suffix.lower() == ".npy":
        labels = read_npy(path)
    else:
        pd = require("pandas", "sklearn")
        try:
            labels = pd.read_csv(path, header=None).iloc[:, -1]
            if labels.dtype == object:  # a header row
                labels = pd.read_csv(path).iloc[:, -1]
        except (ValueError, OSError) as exc:  # empty, not a table, not text
            raise InputError(f"--eval-labels {path} cannot be read as a table ({first_line(exc)}); give integer "
                             "class labels in a one-column .csv or a .npy") from exc
        labels = labels.to_numpy()
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iu":
        raise InputError(f"--eval-labels {path} holds {labels.dtype} values; give integer class labels "
                         "(e.g. y.astype(int))")
    return labels
