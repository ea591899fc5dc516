"""ONNX sources: a ``.onnx`` file passes through (inspected, optimized, checked against itself)."""

from __future__ import annotations

from pathlib import Path

from ..files import sha256
from ..onnx_graph import read_onnx
from .base import SourceModel


def load_onnx_file(path: Path) -> SourceModel:
    source = from_onnx_proto(read_onnx(path))
    source.path, source.sha256, source.format = str(path), sha256(path), "onnx"
    return source


def from_onnx_proto(model) -> SourceModel:
    from ..onnx_graph import graph_input_specs

    return SourceModel("onnx", model, graph_input_specs(model), "onnx ModelProto")
