"""Loading source models (PyTorch, scikit-learn, ONNX, Hugging Face folders) from objects or files into a SourceModel.

Dispatch is by object type, file suffix, or a folder holding ``config.json``; each framework's loader lives in
its own module and imports its framework only when used. Pickle-based files need ``trust_pickle=True`` and
Hugging Face folders asking for their own code ``trust_remote_code=True``: loading them runs code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError, SpecError
from ..files import sha256
from ..readable import regular_file
from .base import SourceModel

TORCH_SUFFIXES = {".pt2", ".pt", ".pth", ".ts", ".jit", ".bin"}
SKLEARN_SUFFIXES = {".skops"}
PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib"}
ONNX_SUFFIXES = {".onnx"}


def load_source(model: Any, *, inputs=None, dynamic_batch: bool = False, sample=None, model_class: str | None = None,
                model_kwargs: dict | None = None, trust_pickle: bool = False, task: str | None = None,
                trust_remote_code: bool = False) -> SourceModel:
    """Load ``model`` (an object or a path) with the options the CLI exposes; see ``edgeml.convert``."""
    from ..spec import parse_specs

    specs = parse_specs(inputs) if inputs else None
    if isinstance(model, (str, os.PathLike)) and Path(model).is_dir():
        from .hf_source import CONFIG, load_hf_folder

        folder = Path(model)
        if not (folder / CONFIG).is_file():
            raise InputError(f"{folder} is a folder without {CONFIG}: edgeml reads Hugging Face folders (config.json "
                             "+ model.safetensors) or a model file; give one of those")
        if specs or dynamic_batch or model_class or sample is not None:
            raise SpecError(f"{folder} is a Hugging Face folder, which names its own inputs; drop --input, "
                            "--dynamic-batch, --model-class and --sample")
        return load_hf_folder(folder, task, trust_remote_code)
    if isinstance(model, (str, os.PathLike)):
        path = regular_file(model, "model file")
        suffix = path.suffix.lower()
        from .hf_source import WEIGHTS, is_hf_folder

        if path.name in WEIGHTS and is_hf_folder(path.parent):
            raise InputError(f"{path} holds the weights of the Hugging Face folder {path.parent}; convert the folder: "
                             f"edgeml convert {path.parent}")
        if suffix in ONNX_SUFFIXES:
            from .onnx_source import load_onnx_file

            if specs or dynamic_batch:
                raise SpecError(f"{path} carries its own input specs; drop --input and --dynamic-batch for ONNX files")
            return load_onnx_file(path)
        if suffix in TORCH_SUFFIXES:
            from .torch_source import load_torch_file

            return load_torch_file(path, specs, dynamic_batch, model_class, model_kwargs, trust_pickle)
        if suffix in SKLEARN_SUFFIXES:
            from .sklearn_source import load_skops

            obj, fmt = load_skops(path, trust_pickle), "skops"
        elif suffix in PICKLE_SUFFIXES:
            from .pickle_source import load_pickle

            obj, fmt = load_pickle(path, trust_pickle), "pickle (trusted)"
        else:
            known = sorted(ONNX_SUFFIXES | TORCH_SUFFIXES | SKLEARN_SUFFIXES | PICKLE_SUFFIXES)
            raise InputError(f"unknown model file suffix {path.suffix or '(none)'!r} for {path}; edgeml reads: {', '.join(known)}")
        return load_object(obj, specs, dynamic_batch, sample, path=path, fmt=fmt, sha=sha256(path))
    return load_object(model, specs, dynamic_batch, sample)


def load_object(model: Any, specs, dynamic_batch: bool, sample, path: Path | None = None, fmt: str | None = None,
                sha: str | None = None) -> SourceModel:
    """A model object (nn.Module, ExportedProgram, estimator, ModelProto) into a SourceModel."""
    if _is_torch_model(model):
        from .torch_source import from_torch_object

        return from_torch_object(model, specs, dynamic_batch, path=path, fmt=fmt, sha=sha)
    if type(model).__module__.split(".")[0] == "onnx":
        from .onnx_source import from_onnx_proto

        return from_onnx_proto(model)
    if hasattr(model, "fit") and (hasattr(model, "predict") or hasattr(model, "transform")):
        from .sklearn_source import from_estimator

        return from_estimator(model, specs, sample, path=path, fmt=fmt, sha=sha)
    raise InputError(
        f"edgeml cannot convert a {type(model).__module__}.{type(model).__name__}; "
        "give a torch nn.Module or ExportedProgram, a scikit-learn estimator, or an ONNX model"
    )


def _is_torch_model(model: Any) -> bool:
    """Without importing torch: a model can only be a torch one if torch is already imported."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(model, (torch.nn.Module, torch.export.ExportedProgram, torch.jit.ScriptModule))
