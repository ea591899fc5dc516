"""``edgeml.load``: open an artifact on the backend its format needs, behind the one Runtime contract."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from ..errors import InputError, no_such_file
from ..readable import regular_file
from .base import Runtime


def load(path: str | os.PathLike, device: str = "cpu", threads: int | None = None, *,
         source: Mapping | None = None, options: Mapping | None = None) -> Runtime:
    """Load a model file for inference.

    An artifact runs on its backend's runtime (``backends``: ``.onnx`` and ``.ort`` on ONNX Runtime, which
    imports nothing heavier). Source files (``.pt2``, TorchScript, state dicts, ``.skops``, trusted pickles)
    run on their own framework: the reference edgeml checks against. ``source``: how to load a source file,
    the options of ``edgeml.convert`` (``{"inputs": [...], "model_class": ..., "trust_pickle": ...}``), kept
    apart from the runtime's own options: ``device``, ``threads``, and ``options``, the backend's (onnxruntime:
    the GPU provider's options, e.g. ``{"trt_fp16_enable": "1", "trt_engine_cache_path": "cache/"}`` on
    ``device="tensorrt"``).
    """
    source_options = dict(source or {})
    from .. import backends

    backend = backends.backend_for(path)
    if backend is not None and backend.folder:
        path = Path(path)
        if not path.is_dir():
            raise no_such_file(path, f"{backend.name} artifact folder")
    else:
        path = regular_file(path, "model file")
    if backend is not None:
        given = [k for k, v in source_options.items() if v]
        if given:
            raise InputError(f"{path} is an {backend.name} artifact: {', '.join(given)} apply to source models only; "
                             "drop them")
        return backend.runtime(path, device=device, threads=threads, **dict(options or {}))
    if options:
        raise InputError(f"{path} is a source model, run on its own framework: runtime options ({', '.join(options)}) "
                         "apply to artifacts; drop them")
    from ..sources import load_source, reference

    return reference(load_source(path, **source_options), device=device, threads=threads)

__all__ = ["Runtime", "load"]
