"""What an artifact is, in the one shape every backend's inspector gives: inputs, outputs, opsets, size,
parameters, op histogram, precision."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .files import size_of
from .model_meta import ModelMeta, ranged_specs
from .spec import TensorSpec

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "MatMulInteger", "ConvInteger", "QGemm", "QAttention", "DynamicQuantizeMatMul"}


_PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def precision_of(ops: Counter, weight_types: Counter, inputs: list[TensorSpec]) -> str:
    """int8 when quantized; else the float type most weights have (double constants, such as a scaler's,
    do not count); for graphs without float weights (tree ensembles), the float type of the inputs."""
    if ops.keys() & QUANTIZED_OPS:
        return "int8"
    floats = {t: n for t, n in weight_types.items() if t in _PRECISIONS}
    if floats:
        return _PRECISIONS[max(floats, key=floats.get)]
    return next((_PRECISIONS[s.dtype] for s in inputs if s.dtype in _PRECISIONS), "fp32")


def summary(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], ops: Counter, weight_types: Counter, *,
            ir_version: int, opsets: dict, producer: str, metadata: dict) -> dict:
    """The description every backend gives of its artifacts, in one shape."""
    return {
        "file": str(path),
        "size_bytes": size_of(path),
        "inputs": [s.to_dict() for s in ranged_specs(inputs, ModelMeta.from_props(metadata))],
        "outputs": [s.to_dict() for s in outputs],
        "ir_version": ir_version,
        "opsets": opsets,
        "producer": producer,
        "parameters": sum(weight_types.values()),
        "nodes": sum(ops.values()),
        "ops": dict(ops.most_common()),
        "quantized": bool(ops.keys() & QUANTIZED_OPS),
        "precision": precision_of(ops, weight_types, inputs),
        "metadata": metadata,
    }
