"""What an ONNX artifact is: inputs, outputs, opsets, size, parameters, op histogram, precision."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import InputError
from .onnx_graph import ELEMENT_TYPES, all_nodes, graph_input_specs, graph_output_specs, opsets, read_onnx
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


def inspect_model(path: str | os.PathLike) -> dict:
    """A summary of an ONNX file; ``edgeml inspect`` prints it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; edgeml inspect reads one .onnx file (edgeml verify {path} checks a "
                         "folder against its manifest)")
    if path.is_file() and path.suffix.lower() != ".onnx":
        raise InputError(f"edgeml inspect reads .onnx files; {path} is not one (convert it first: edgeml convert {path})")
    model = read_onnx(path)
    ops = Counter(node.op_type for node in all_nodes(model.graph))
    weight_types: Counter = Counter()
    parameters = 0
    for init in model.graph.initializer:
        count = int(np.prod(init.dims)) if init.dims else 1
        parameters += count
        weight_types[ELEMENT_TYPES.get(init.data_type, "other")] += count
    inputs = graph_input_specs(model)
    return {
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in graph_output_specs(model)],
        "ir_version": model.ir_version,
        "opsets": opsets(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "parameters": parameters,
        "nodes": sum(ops.values()),
        "ops": dict(ops.most_common()),
        "quantized": bool(ops.keys() & QUANTIZED_OPS),
        "precision": precision_of(ops, weight_types, inputs),
        "metadata": {p.key: p.value for p in model.metadata_props},
    }

