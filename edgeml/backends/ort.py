"""onnxruntime's ORT format (``.ort``): the flatbuffer file that the minimal and mobile builds of
onnxruntime (Android, iOS, ``onnxruntime-mobile``) load, which cannot read ``.onnx``. Converted from the
checked ONNX artifact the way ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` does by default:
optimized at the "all" level and saved, without the NCHWc layout transformer, whose output only x86 runs."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

from . import Backend, Edge, register

#: The graph optimization level the file is saved at (onnxruntime's converter default).
LEVEL = "ORT_ENABLE_ALL"
#: Optimizers left out: NCHWc layout is x86-only (the converter drops it for every platform but amd64).
DISABLED = ["NchwcTransformer"]


def _runtime(path, device: str = "cpu", threads: int | None = None, **options):
    from ..runtimes.onnxrt import OnnxRuntime

    return OnnxRuntime(path, device=device, threads=threads, provider_options=options)


def _reference(onnx_file: Path):
    """The ONNX file as onnxruntime runs it with the optimizations the ORT file was saved with: a check
    against the ONNX file's own session would see the NCHWc layout's float rounding flip dynamic INT8 steps."""
    from ..runtimes.onnxrt import OnnxRuntime

    return OnnxRuntime(onnx_file, disabled_optimizers=DISABLED)


def _build(onnx_file: Path, out: Path) -> dict:
    """Save ``onnx_file`` in ORT format at ``out`` through an onnxruntime session, as onnxruntime's converter."""
    import onnxruntime as ort

    from ..calibration.quantize import onnxruntime_failure
    from ..runtimes.onnxrt import session_options

    options = session_options()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVEL)
    options.optimized_model_filepath = str(out)
    options.add_session_config_entry("session.save_model_format", "ORT")
    with onnxruntime_failure(f"saving {Path(onnx_file).name} in ORT format", "ship the .onnx artifact"):
        ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED)
    return {"converter": "onnxruntime (session.save_model_format=ORT)", "version": ort.__version__,
            "optimization_level": LEVEL, "disabled_optimizers": DISABLED}


def _inspect(path) -> dict:
    """What ``inspect`` says of an ONNX file, read from the flatbuffer (ops, opsets, weights) and from an
    onnxruntime session (inputs, outputs, metadata)."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py import fbs

    from ..errors import InputError, first_line
    from ..inspection import summary
    from ..onnx_graph import ELEMENT_TYPES
    from ..readable import regular_file

    path = regular_file(path, "ORT file")
    data = path.read_bytes()
    if not fbs.InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(data, 0):
        raise InputError(f"{path} is not an ORT format file; convert one with edgeml convert MODEL --to ort")
    with _runtime(path) as runtime:  # onnxruntime verifies the flatbuffer first: a damaged file is an InputError
        inputs, outputs, metadata = runtime.inputs, runtime.outputs, dict(runtime.metadata)
    try:
        model = fbs.InferenceSession.InferenceSession.GetRootAs(data, 0).Model()
        graph = model.Graph()
        ops = Counter(graph.Nodes(i).OpType().decode() for i in range(graph.NodesLength()))
        used = {graph.Nodes(i).Domain().decode() for i in range(graph.NodesLength())}
        opsets = {(d.Domain().decode() or "ai.onnx"): d.Version()
                  for d in map(model.OpsetImport, range(model.OpsetImportLength())) if d.Domain().decode() in used}
        weights: Counter = Counter()
        for tensor in map(graph.Initializers, range(graph.InitializersLength())):
            count = 1
            for axis in range(tensor.DimsLength()):
                count *= tensor.Dims(axis)
            weights[ELEMENT_TYPES.get(tensor.DataType(), "other")] += count
        producer = f"{(model.ProducerName() or b'').decode()} {(model.ProducerVersion() or b'').decode()}".strip()
    except (struct.error, IndexError, TypeError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path} is a damaged ORT format file ({first_line(exc)}); convert it again") from exc
    return summary(path, inputs, outputs, ops, weights, ir_version=model.IrVersion(), opsets=opsets,
                   producer=producer, metadata=metadata)


register(Backend("ort", ".ort", "onnxruntime's ORT format, for its minimal and mobile builds", _runtime, _inspect,
                 tools=("onnxruntime",)),
         Edge("onnx", "ort", _build, "onnxruntime session saved in ORT format", reference=_reference))
