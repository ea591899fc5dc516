"""CoreML packages (``.mlpackage`` folders): built from the PyTorch source by coremltools (an edge from
``torch``, not from ONNX), run by CoreML on macOS only. Elsewhere they are inspected and verified from their
spec, and their check is structural (the pipeline says so in the manifest: never ``passed``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import Backend, Edge, register

PRECISIONS = ("fp16", "fp32")
#: Deployment targets mlprogram supports, oldest first; the default is the oldest.
MIN_TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")
DEFAULT_OPTIONS = {"precision": "fp16", "min_target": "iOS16", "compute_units": "ALL"}


def check_options(options: dict) -> dict:
    """The CoreML options with their defaults, each checked before anything is exported."""
    merged = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    unknown = sorted(set(merged) - set(DEFAULT_OPTIONS))
    if unknown:
        raise InputError(f"unknown CoreML option(s) {', '.join(unknown)}; CoreML takes {', '.join(DEFAULT_OPTIONS)}")
    if merged["precision"] not in PRECISIONS:
        raise InputError(f"--precision {merged['precision']!r} is not one of {', '.join(PRECISIONS)}")
    if merged["min_target"] not in MIN_TARGETS:
        raise InputError(f"--min-target {merged['min_target']!r} is not one of {', '.join(MIN_TARGETS)} "
                         "(mlprogram packages need iOS16/macOS13 or later)")
    return merged


def _runtime(path, device: str = "cpu", threads: int | None = None):
    from ..runtimes.coreml import CoreMLRuntime

    return CoreMLRuntime(path, device=device, threads=threads)


def _inspect(path) -> dict:
    from ..inspection import summary

    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise InputError(f"{path} is not a CoreML package (no Manifest.json); convert one with --to coreml")
    from ..runtimes.coreml import describe

    inputs, outputs, metadata, spec = describe(path)
    main = spec.mlProgram.functions["main"]
    block = main.block_specializations[main.opset]
    ops = Counter(op.type for op in block.operations)
    from coremltools.proto import MIL_pb2

    weights: Counter = Counter()
    for op in block.operations:
        value = op.attributes.get("val") if op.type == "const" else None
        if value is not None and value.type.WhichOneof("type") == "tensorType":
            tensor = value.type.tensorType
            count = int(np.prod([d.constant.size for d in tensor.dimensions])) if tensor.dimensions else 1
            weights[MIL_pb2.DataType.Name(tensor.dataType).lower()] += count  # "float16", "int8"...
    return summary(path, inputs, outputs, ops, weights, ir_version=spec.specificationVersion,
                   opsets={"mlprogram": main.opset}, producer=metadata.get("com.github.apple.coremltools.source", ""),
                   metadata=metadata)


def _build(source, out: Path, options: dict) -> dict:
    from ..converters.torch_coreml import torch_to_coreml

    return torch_to_coreml(source, out, options)


register(Backend("coreml", ".mlpackage", "CoreML mlprogram package for iOS/macOS apps (predicts on macOS only)",
                 _runtime, _inspect, tools=("coremltools",), folder=True),
         Edge("torch", "coreml", description="coremltools from the torch.export program", options=check_options,
              build_source=_build))
