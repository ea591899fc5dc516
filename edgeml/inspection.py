"""What an ONNX artifact is: inputs, outputs, opsets, size, parameters, op histogram, precision."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import InputError, first_line, no_such_file
from .spec import TensorSpec

#: ONNX element types (TensorProto.DataType) to edgeml dtype names.
ELEMENT_TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "str",
                 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "MatMulInteger", "ConvInteger", "QGemm", "QAttention", "DynamicQuantizeMatMul"}


def value_info_spec(value) -> TensorSpec:
    tensor = value.type.tensor_type
    shape = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
    )
    return TensorSpec(value.name, shape, ELEMENT_TYPES.get(tensor.elem_type, str(tensor.elem_type)))


def graph_input_specs(model) -> list[TensorSpec]:
    initializers = {i.name for i in model.graph.initializer}
    return [value_info_spec(v) for v in model.graph.input if v.name not in initializers]


def precision_of(ops: Counter, weight_types: Counter) -> str:
    if ops.keys() & QUANTIZED_OPS:
        return "int8"
    floats = {t: n for t, n in weight_types.items() if t in ("float32", "float16", "bfloat16", "float64")}
    return max(floats, key=floats.get).replace("float32", "fp32").replace("float16", "fp16") if floats else "fp32"


def inspect_model(path: str | os.PathLike) -> dict:
    """A summary of an ONNX file; ``edgeml inspect`` prints it."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise no_such_file(path)
    if path.suffix.lower() != ".onnx":
        raise InputError(f"edgeml inspect reads .onnx files; {path} is not one (convert it first: edgeml convert {path})")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path} is not a valid ONNX model ({first_line(exc)}); the file may be truncated or corrupt") from exc
    ops = Counter(node.op_type for node in _all_nodes(model.graph))
    weight_types: Counter = Counter()
    parameters = 0
    for init in model.graph.initializer:
        count = int(np.prod(init.dims)) if init.dims else 1
        parameters += count
        weight_types[ELEMENT_TYPES.get(init.data_type, "other")] += count
    return {
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "inputs": [s.to_dict() for s in graph_input_specs(model)],
        "outputs": [value_info_spec(v).to_dict() for v in model.graph.output],
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "parameters": parameters,
        "nodes": sum(ops.values()),
        "ops": dict(ops.most_common()),
        "quantized": bool(ops.keys() & QUANTIZED_OPS),
        "precision": precision_of(ops, weight_types),
        "metadata": {p.key: p.value for p in model.metadata_props},
    }


def _all_nodes(graph):
    """Nodes of a graph and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)
