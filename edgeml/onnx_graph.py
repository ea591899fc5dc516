"""Reading and touching ONNX graphs: validity, TensorSpecs of inputs and outputs, names and metadata.

Every place that opens an ONNX file (sources, inspect) goes through ``read_onnx`` so that a truncated
or invalid file gets the same clear error everywhere.
"""

from __future__ import annotations

import os

from .errors import InputError, first_line
from .readable import regular_file
from .spec import TensorSpec

#: ONNX element types (TensorProto.DataType) to edgeml dtype names.
ELEMENT_TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "str",
                 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


def read_onnx(path: str | os.PathLike, *, weights: bool = True):
    """Load and check an ONNX file, or say plainly why it cannot be used. ``weights=False`` reads the graph
    alone (external weight files are not opened; initializers keep their shapes), for what only looks at it."""
    import onnx

    path = regular_file(path, "ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=weights)
        if weights:
            onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - protobuf and checker errors alike mean a bad file
        raise InputError(f"{path} is not a valid ONNX model ({first_line(exc)}); the file may be truncated or corrupt: re-export it") from exc
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{path} holds an empty ONNX graph; re-export it")
    return model


def value_info_spec(value) -> TensorSpec:
    tensor = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or "?")
                  for d in tensor.shape.dim)
    return TensorSpec(value.name, shape, ELEMENT_TYPES.get(tensor.elem_type) or _type_name(tensor.elem_type))


def _type_name(elem_type: int) -> str:
    """A readable name for an element type edgeml has no dtype for (float8e4m3fn, not 17)."""
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"onnx element type {elem_type}"


def graph_input_specs(model) -> list[TensorSpec]:
    initializers = {i.name for i in model.graph.initializer}
    return [value_info_spec(v) for v in model.graph.input if v.name not in initializers]


def graph_output_specs(model) -> list[TensorSpec]:
    return [value_info_spec(v) for v in model.graph.output]


def opsets(model) -> dict[str, int]:
    return {(o.domain or "ai.onnx"): o.version for o in model.opset_import}


def align_inputs(model, specs: list[TensorSpec]) -> list[str]:
    """Give the graph's inputs the source's names and symbolic dim names (``batch``, not ``s77``).

    Returns the problems found: dims the source leaves symbolic but the exporter fixed.
    """
    graph_inputs = [v for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer}]
    renames, dims, problems = {}, {}, []
    for value, spec in zip(graph_inputs, specs):
        if value.name != spec.name:
            renames[value.name] = spec.name
            value.name = spec.name
        for axis, (dim, want) in enumerate(zip(value.type.tensor_type.shape.dim, spec.shape)):
            if isinstance(want, str) and dim.HasField("dim_value"):
                problems.append(f"input {spec.name!r} axis {axis} is symbolic ({want}) in the source but fixed to "
                                f"{dim.dim_value} in the export")
            elif isinstance(want, str) and dim.dim_param and want != "?":
                dims[dim.dim_param] = want
    for node in all_nodes(model.graph):
        node.input[:] = [renames.get(name, name) for name in node.input]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in dims:
                dim.dim_param = dims[dim.dim_param]
    return problems


def set_metadata(model, values: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        entry = existing.get(key) or model.metadata_props.add()
        entry.key, entry.value = key, value


def all_nodes(graph):
    """Nodes of a graph and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from all_nodes(attr.g)
            for sub in attr.graphs:
                yield from all_nodes(sub)


#: Ops that pass integer ids on with their values unchanged: followed from a graph input to the table it indexes.
_ID_PASSING_OPS = {"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}


def index_table_rows(model) -> dict[str, int]:
    """For each graph input whose values index a constant table, the table's row count: its values must lie in
    ``[0, rows)`` (the vocabulary of ``input_ids``, the 2 segments of ``token_type_ids``).

    Found where the input (through Cast/Reshape/... nodes) is the indices of a Gather on an initializer or a
    Constant (also one behind a DequantizeLinear: a weight-only INT8 table), or the ids of onnxruntime's fused
    EmbedLayerNormalization (Optimum's optimized exports). An input indexing several tables gets the smallest.
    """
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = list(node.attribute[0].t.dims)
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in model.graph.node:  # a quantized table: DequantizeLinear(table, scale, zero point) keeps its shape
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    rows: dict[str, int] = {}
    for spec in graph_input_specs(model):
        found = []
        names, seen = [spec.name], set()
        while names:
            name = names.pop()
            seen.add(name)
            for node in consumers.get(name, ()):
                if node.op_type in _ID_PASSING_OPS and node.input[0] == name:
                    names += [o for o in node.output if o not in seen]
                elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name and node.input[0] in shapes:
                    dims = shapes[node.input[0]]
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    if dims and -len(dims) <= axis < len(dims):
                        found.append(dims[axis])
                elif node.op_type == "EmbedLayerNormalization":  # inputs: ids, segment ids, word/position/segment tables
                    table = {0: 2, 1: 4}.get(list(node.input).index(name))
                    if table is not None and len(node.input) > table and shapes.get(node.input[table]):
                        found.append(shapes[node.input[table]][0])
        if found and min(found) > 0:
            rows[spec.name] = int(min(found))
    return rows
