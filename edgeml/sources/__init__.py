"""Loading source models (PyTorch, scikit-learn, ONNX, Hugging Face folders) from objects or files into a SourceModel.

Two tables say what edgeml reads, so that no caller tests a framework by name: ``FRAMEWORKS`` (what a model
of each framework is: how to recognise one, run it as the reference, export it to ONNX, and which of
edgeml's steps apply to it) and ``READERS`` (which file suffixes, or folders, each loader reads). Every
framework's code lives in its own module and imports its framework only when used. Pickle-based files need
``trust_pickle=True`` and Hugging Face folders asking for their own code ``trust_remote_code=True``: loading
them runs code.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, SpecError
from ..files import sha256
from ..readable import regular_file
from .base import SourceModel


@dataclass(frozen=True)
class Request:
    """How the user asked for a model to be loaded (``edgeml.convert``'s source options)."""

    specs: list | None = None
    dynamic_batch: bool = False
    sample: Any = None
    model_class: str | None = None
    model_kwargs: dict | str | None = None
    trust_pickle: bool = False
    task: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Framework:
    """A source framework. ``owns(obj)``: whether an object is one of its models, without importing the
    framework; ``from_object(obj, request, path, fmt, sha)``: the SourceModel; ``reference(source, device,
    threads)``: the runtime every artifact is checked against; ``export(source, opset) -> (ModelProto,
    record)``: its edge to ONNX; ``tools``: the packages manifests record. ``fuses``: onnxruntime's
    transformer fusions apply to its export. ``tabular``: a scikit-learn-style model: its ai.onnx.ml
    operators have no INT8 or FP16 form, NaN is a (missing) value it takes, a row near a tree split may
    flip in float32 (``validate.SKLEARN_ROW_ALLOWANCE``), and generated inputs say little about it."""

    name: str
    owns: Callable[[Any], bool]
    from_object: Callable
    reference: Callable
    export: Callable
    tools: tuple[str, ...] = ()
    fuses: bool = False
    tabular: bool = False


@dataclass(frozen=True)
class Reader:
    """A loader of model files with ``suffixes`` (or of folders, with ``folder``):
    ``load(path, request) -> SourceModel``."""

    suffixes: tuple[str, ...]
    load: Callable[[Path, Request], SourceModel]
    folder: bool = False


def _torch_owns(model: Any) -> bool:
    """Without importing torch: a model can only be a torch one if torch is already imported."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, (torch.nn.Module, torch.export.ExportedProgram,
                                                    torch.jit.ScriptModule))


def _torch_object(model, request: Request, path=None, fmt=None, sha=None) -> SourceModel:
    from .torch_source import from_torch_object

    return from_torch_object(model, request.specs, request.dynamic_batch, path=path, fmt=fmt, sha=sha)


def _torch_reference(source: SourceModel, device: str = "cpu", threads: int | None = None):
    from ..runtimes.pytorch import TorchRuntime, place_on

    return TorchRuntime(place_on(source.model, device), source.inputs, device=device, path=source.path, threads=threads)


def _torch_export(source: SourceModel, opset: int | None):
    from ..converters.torch_onnx import torch_to_onnx

    return torch_to_onnx(source, opset)


def _sklearn_owns(model: Any) -> bool:
    return hasattr(model, "fit") and (hasattr(model, "predict") or hasattr(model, "transform"))


def _sklearn_object(model, request: Request, path=None, fmt=None, sha=None) -> SourceModel:
    from .sklearn_source import from_estimator

    return from_estimator(model, request.specs, request.sample, path=path, fmt=fmt, sha=sha)


def _sklearn_reference(source: SourceModel, device: str = "cpu", threads: int | None = None):
    from ..runtimes.base import check_threads
    from ..runtimes.sklearn import SklearnRuntime

    if device != "cpu":
        raise InputError(f"{source.path or 'the model'} runs on scikit-learn, which has no device {device!r}; "
                         "convert it to ONNX for GPUs")
    check_threads(threads)  # scikit-learn has no thread setting here, but a bad value is still the user's error
    return SklearnRuntime(source.model, source.inputs, columns=source.columns, path=source.path)


def _sklearn_export(source: SourceModel, opset: int | None):
    from ..converters.sklearn_onnx import sklearn_to_onnx

    return sklearn_to_onnx(source, opset)


def _onnx_owns(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "onnx"


def _onnx_object(model, request: Request, path=None, fmt=None, sha=None) -> SourceModel:
    from .onnx_source import from_onnx_proto

    return from_onnx_proto(model)


def _onnx_reference(source: SourceModel, device: str = "cpu", threads: int | None = None):
    from ..runtimes.onnxrt import OnnxRuntime

    return OnnxRuntime(source.path or source.model.SerializeToString(), device=device, threads=threads)


def _onnx_export(source: SourceModel, opset: int | None):
    """An ONNX source passes through as it is."""
    if opset is not None:
        raise InputError("--opset applies to exports; an ONNX source keeps its opsets")
    return source.model, {"exporter": "none (ONNX source)"}


FRAMEWORKS: dict[str, Framework] = {f.name: f for f in (
    Framework("torch", _torch_owns, _torch_object, _torch_reference, _torch_export,
              tools=("torch", "onnxscript", "transformers"), fuses=True),
    Framework("sklearn", _sklearn_owns, _sklearn_object, _sklearn_reference, _sklearn_export,
              tools=("scikit-learn", "skl2onnx"), tabular=True),
    Framework("onnx", _onnx_owns, _onnx_object, _onnx_reference, _onnx_export),
)}


def _read_torch(path: Path, request: Request) -> SourceModel:
    from .torch_source import load_torch_file

    return load_torch_file(path, request.specs, request.dynamic_batch, request.model_class, request.model_kwargs,
                           request.trust_pickle)


def _read_onnx(path: Path, request: Request) -> SourceModel:
    from .onnx_source import load_onnx_file

    if request.specs or request.dynamic_batch:
        raise SpecError(f"{path} carries its own input specs; drop --input and --dynamic-batch for ONNX files")
    return load_onnx_file(path)


def _read_skops(path: Path, request: Request) -> SourceModel:
    from .sklearn_source import load_skops

    return load_object(load_skops(path, request.trust_pickle), request, path, "skops", sha256(path))


def _read_pickle(path: Path, request: Request) -> SourceModel:
    from .pickle_source import load_pickle

    return load_object(load_pickle(path, request.trust_pickle), request, path, "pickle (trusted)", sha256(path))


def _read_hf_folder(folder: Path, request: Request) -> SourceModel:
    from .hf_source import CONFIG, load_hf_folder

    if not (folder / CONFIG).is_file():
        raise InputError(f"{folder} is a folder without {CONFIG}: edgeml reads Hugging Face folders (config.json "
                         "+ model.safetensors) or a model file; give one of those")
    if request.specs or request.dynamic_batch or request.model_class or request.sample is not None:
        raise SpecError(f"{folder} is a Hugging Face folder, which names its own inputs; drop --input, "
                        "--dynamic-batch, --model-class and --sample")
    return load_hf_folder(folder, request.task, request.trust_remote_code)


READERS: tuple[Reader, ...] = (
    Reader((".onnx",), _read_onnx),
    Reader((".pt2", ".pt", ".pth", ".ts", ".jit", ".bin"), _read_torch),
    Reader((".skops",), _read_skops),
    Reader((".pkl", ".pickle", ".joblib"), _read_pickle),
    Reader((), _read_hf_folder, folder=True),
)


def load_source(model: Any, *, inputs=None, dynamic_batch: bool = False, sample=None, model_class: str | None = None,
                model_kwargs: dict | None = None, trust_pickle: bool = False, task: str | None = None,
                trust_remote_code: bool = False) -> SourceModel:
    """Load ``model`` (an object or a path) with the options the CLI exposes; see ``edgeml.convert``."""
    from ..spec import parse_specs

    request = Request(parse_specs(inputs) if inputs else None, dynamic_batch, sample, model_class, model_kwargs,
                      trust_pickle, task, trust_remote_code)
    if not isinstance(model, (str, os.PathLike)):
        return load_object(model, request)
    if Path(model).is_dir():
        return next(r for r in READERS if r.folder).load(Path(model), request)
    path = regular_file(model, "model file")
    from .hf_source import WEIGHTS, is_hf_folder

    if path.name in WEIGHTS and is_hf_folder(path.parent):
        raise InputError(f"{path} holds the weights of the Hugging Face folder {path.parent}; convert the folder: "
                         f"edgeml convert {path.parent}")
    reader = next((r for r in READERS if path.suffix.lower() in r.suffixes), None)
    if reader is None:
        known = sorted(suffix for r in READERS for suffix in r.suffixes)
        raise InputError(f"unknown model file suffix {path.suffix or '(none)'!r} for {path}; edgeml reads: {', '.join(known)}")
    return reader.load(path, request)


def load_object(model: Any, request: Request, path: Path | None = None, fmt: str | None = None,
                sha: str | None = None) -> SourceModel:
    """A model object (nn.Module, ExportedProgram, estimator, ModelProto) into a SourceModel, by the framework
    that owns it."""
    framework = next((f for f in FRAMEWORKS.values() if f.owns(model)), None)
    if framework is None:
        raise InputError(
            f"edgeml cannot convert a {type(model).__module__}.{type(model).__name__}; "
            "give a torch nn.Module or ExportedProgram, a scikit-learn estimator, or an ONNX model"
        )
    return framework.from_object(model, request, path, fmt, sha)


def framework(source: SourceModel) -> Framework:
    """The framework ``source`` belongs to."""
    return FRAMEWORKS[source.kind]


def reference(source: SourceModel, device: str = "cpu", threads: int | None = None):
    """A Runtime running the source itself, on its own framework: what every artifact is compared with."""
    return framework(source).reference(source, device, threads)


def tools() -> tuple[str, ...]:
    """Every framework's packages, once each."""
    return tuple(dict.fromkeys(tool for f in FRAMEWORKS.values() for tool in f.tools))
