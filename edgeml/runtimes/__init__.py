"""``edgeml.load``: open an artifact on the backend its format needs, behind the one Runtime contract."""

from __future__ import annotations

import os

from ..errors import InputError
from ..readable import regular_file
from .base import Runtime


def load(path: str | os.PathLike, device: str = "cpu", threads: int | None = None, **source_options) -> Runtime:
    """Load a model file for inference.

    ``.onnx`` runs on ONNX Runtime (imports nothing heavier). Source files (``.pt2``, TorchScript, state
    dicts, ``.skops``, trusted pickles) run on their own framework: the reference edgeml checks against.
    ``source_options`` are those of ``edgeml.convert`` (``inputs``, ``model_class``, ``trust_pickle``...).
    """
    path = regular_file(path, "model file")
    if path.suffix.lower() == ".onnx":
        from .onnxrt import OnnxRuntime

        given = [k for k, v in source_options.items() if v]
        if given:
            raise InputError(f"{path} is an ONNX file: {', '.join(given)} apply to source models only; drop them")
        return OnnxRuntime(path, device=device, threads=threads)
    from ..sources import load_source

    source = load_source(path, **source_options)
    if source.kind == "sklearn" and device != "cpu":
        raise InputError(f"{path} runs on scikit-learn, which has no device {device!r}; convert it to ONNX for GPUs")
    return source.reference(device=device, threads=threads)

__all__ = ["Runtime", "load"]
