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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import InputError, first_line, require
from ..quiet import quiet
from .targets import Target, exact_copy

METHODS = ("minmax", "entropy", "percentile")
#: Samples run through the calibration model per pass: memory is bounded by this, not by the sample count.
CHUNK = 16
#: Ops the dynamic quantizer touches: MatMul/Gemm-heavy models (MLPs, transformers) gain; ConvInteger with
#: int8 weights has no CPU kernel, so convolutions stay FP32.
DYNAMIC_OPS = ["MatMul", "Gemm", "Attention", "LSTM", "GRU"]


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


def calibrate(model: Path, samples, method: str, target: Target, workdir: Path,
              progress: Callable[[str], None]) -> Calibration:
    """Run ``samples`` (a CalibrationSource) through the model in chunks and compute the tensor ranges.

    NaN or Inf in a sample is refused by name: onnxruntime would turn it into a NaN scale."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    total = len(samples)
    peak_rss_mb(reset=True)
    start = time.perf_counter()
    with quiet():
        calibrator = create_calibrator(model, _op_types(), augmented_model_path=str(workdir / "augmented.onnx"),
                                       calibrate_method=methods[method],
                                       extra_options={"symmetric": target.symmetric_activations})
    reader = _reader(finite_samples(samples, f"calibration data {samples.name}"))
    done = 0
    while done < total:
        count = min(CHUNK, total - done)
        reader.allow(count)
        try:
            with quiet():
                calibrator.collect_data(reader)
        except ValueError as exc:
            if "No data is collected" not in str(exc):
                raise _calibration_failed(method, samples, exc) from exc
            raise InputError(f"the calibration source ran dry after {done} of {total} samples: a function source "
                             "must return a fresh iterable on every call (a generator function, not a generator)") from exc
        done += count
        progress(f"calibrated on {done}/{total} samples")
    try:
        with quiet():
            ranges = calibrator.compute_data()
    except ValueError as exc:
        raise _calibration_failed(method, samples, exc) from exc
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


def _calibration_failed(method: str, samples, exc: Exception) -> InputError:
    return InputError(f"{method} calibration on {samples.name} failed in onnxruntime ({first_line(exc)}); "
                      "try --calib-method minmax, or check that the model computes finite values on this data")


def _check_ranges(ranges, samples) -> None:
    """Finite inputs can still give NaN/Inf activations (an overflow, log of a negative): name the tensor."""
    for name, data in ranges.items():
        if not np.isfinite(np.asarray(data.range_value, dtype=np.float64)).all():
            raise InputError(f"the model computes NaN or Inf at tensor {name!r} on the calibration data "
                             f"{samples.name}; INT8 needs finite activations: check the data and the model")


def _op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def quantize_static(model: Path, ranges, target: Target, exclude: list[str], out: Path) -> None:
    """Write a Q/DQ model with the target's recipe: INT8 weights per channel, the target's activations.
    x86 takes uint8 activations (U8S8), the pair its integer dot products (VNNI vpdpbusd, AVX2 vpmaddubsw)
    take natively: 3.1x faster than S8S8 on a ResNet-18 here, where S8S8 was slower than FP32."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    activations = QuantType.QInt8 if target.activations == "int8" else QuantType.QUInt8
    extra = {"ActivationSymmetric": target.symmetric_activations, "WeightSymmetric": True}
    with quiet():
        quantizer = QDQQuantizer(load_model_with_shape_infer(model), True, target.reduce_range, QuantType.QInt8,
                                 activations, ranges, [], list(exclude), _op_types(), extra)
        quantizer.quantize_model()
        quantizer.model.save_model_to_file(str(out))  # sorts the graph topologically, as onnx requires


def quantize_dynamic(model: Path, target: Target, out: Path) -> None:
    """Weights INT8, activations quantized at run time: the usual choice for MLPs and transformers on CPUs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize_dynamic

    with quiet():
        ort_quantize_dynamic(model, out, op_types_to_quantize=DYNAMIC_OPS, per_channel=False,
                             reduce_range=target.reduce_range, weight_type=QuantType.QInt8)


def layer_sqnr(fp32: Path, int8: Path, samples: list[dict], workdir: Path) -> list[dict]:
    """Per-tensor SQNR (dB) between FP32 and Q/DQ activations, lowest (worst) first: onnxruntime's
    qdq_loss_debug on a few held-out samples. Each tensor comes with the nodes that produce and consume it:
    keeping a tensor in FP32 means keeping its consumers (where its Q/DQ pair sits) in FP32 too. The Q/DQ
    model runs with exact integer products (``targets.exact_copy``), as the gate judges it."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                          create_activation_matching,
                                                          modify_model_output_intermediate_tensors)

    graph = onnx.load(str(fp32)).graph
    producers = {out: node.name for node in graph.node for out in node.output}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    exact = workdir / "sqnr_exact.onnx"
    exact.write_bytes(exact_copy(int8))
    activations = {}
    for label, path in (("float", fp32), ("qdq", exact)):
        augmented = workdir / f"sqnr_{label}.onnx"
        with quiet():
            modify_model_output_intermediate_tensors(str(path), str(augmented))
            reader = _reader(iter(samples))
            reader.allow(len(samples))
            activations[label] = collect_activations(str(augmented), reader)
    matching = create_activation_matching(activations["qdq"], activations["float"])
    errors = compute_activation_error(matching)
    # Ranked by the error against FP32 (xmodel_err). The tensor's own Q/DQ noise (qdq_err, also reported)
    # was tried and misled on tests/test_int8.py's outlier model: it pointed at the Relu before the damaged
    # layer, and three rounds kept everything in FP32 instead of the layers around the outlier.
    layers = [{"tensor": name, "node": producers[name], "nodes": [producers[name], *consumers.get(name, [])],
               "sqnr_db": float(err["xmodel_err"]), "qdq_sqnr_db": float(err["qdq_err"])}
              for name, err in errors.items() if "xmodel_err" in err and name in producers]
    return sorted(layers, key=lambda layer: layer["sqnr_db"])


def read_labels(path: str | Path) -> np.ndarray:
    """Integer class labels from a .npy (never unpickled), or a one-column .csv/.txt."""
    from ..readable import regular_file
    from .sources import read_npy

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
