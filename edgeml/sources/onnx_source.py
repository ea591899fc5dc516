"""ONNX sources: a ``.onnx`` file passes through (inspected, optimized, checked against itself)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, first_line
from ..files import sha256
from .base import SourceModel


def load_onnx_file(path: Path) -> SourceModel:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - protobuf and checker errors alike mean a bad file
        raise InputError(f"{path} is not a valid ONNX model ({first_line(exc)}); the file may be truncated or corrupt: re-export it") from exc
    source = from_onnx_proto(model)
    source.path, source.sha256, source.format = str(path), sha256(path), "onnx"
    return source


def from_onnx_proto(model) -> SourceModel:
    from ..inspection import graph_input_specs

    return SourceModel("onnx", model, graph_input_specs(model), "onnx ModelProto")
