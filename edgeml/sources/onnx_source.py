"""ONNX sources: a ``.onnx`` file passes through (inspected, optimized, checked against itself)."""

from __future__ import annotations

from pathlib import Path

from ..files import sha256
from ..onnx_graph import read_onnx
from .base import SourceModel


def load_onnx_file(path: Path) -> SourceModel:
    """An ONNX file, its inputs with the dim ranges its edgeml metadata records, and the tokenizer beside it
    that the metadata names (copied with the new artifact)."""
    from ..model_meta import ranged_specs, read_meta

    source = from_onnx_proto(read_onnx(path))
    source.path, source.sha256, source.format = str(path), sha256(path), "onnx"
    source.meta = read_meta(source.model)
    source.inputs = ranged_specs(source.inputs, source.meta)
    if source.meta.tokenizer:
        tokenizer = path.parent / source.meta.tokenizer
        if Path(source.meta.tokenizer).name == source.meta.tokenizer and tokenizer.is_file():
            source.tokenizer = str(tokenizer)
        else:
            source.notes.append(f"the tokenizer {source.meta.tokenizer} its metadata names is not beside {path.name}: "
                                "the artifact will have none (m.encode needs it)")
            source.meta.tokenizer = None
            kept = [p for p in source.model.metadata_props if p.key != "edgeml.tokenizer"]
            del source.model.metadata_props[:]
            source.model.metadata_props.extend(kept)
    return source


def from_onnx_proto(model) -> SourceModel:
    from ..onnx_graph import graph_input_specs

    return SourceModel("onnx", model, graph_input_specs(model), "onnx ModelProto")
