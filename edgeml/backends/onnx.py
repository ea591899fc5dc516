"""ONNX files: built by the export step (every source's first artifact), run on onnxruntime."""

from __future__ import annotations

from . import Backend, register


def _runtime(path, device: str = "cpu", threads: int | None = None, **options):
    from ..runtimes.onnxrt import OnnxRuntime

    return OnnxRuntime(path, device=device, threads=threads, provider_options=options)


def inspect_onnx(path) -> dict:
    """An ONNX file as ``edgeml inspect`` describes it (``inspection.summary``), read with onnx."""
    from collections import Counter
    from pathlib import Path

    import numpy as np

    from ..inspection import summary
    from ..onnx_graph import ELEMENT_TYPES, all_nodes, graph_input_specs, graph_output_specs, opsets, read_onnx

    path = Path(path)
    model = read_onnx(path)
    ops = Counter(node.op_type for node in all_nodes(model.graph))
    weight_types: Counter = Counter()
    for init in model.graph.initializer:
        weight_types[ELEMENT_TYPES.get(init.data_type, "other")] += int(np.prod(init.dims)) if init.dims else 1
    return summary(path, graph_input_specs(model), graph_output_specs(model), ops, weight_types,
                   ir_version=model.ir_version, opsets=opsets(model),
                   producer=f"{model.producer_name} {model.producer_version}".strip(),
                   metadata={p.key: p.value for p in model.metadata_props})


register(Backend("onnx", ".onnx", "ONNX file, run on onnxruntime (CPU, CUDA, TensorRT providers)", _runtime, inspect_onnx,
                 tools=("onnx", "onnxruntime", "onnxslim")))
