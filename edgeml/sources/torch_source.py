"""PyTorch sources: nn.Module, ExportedProgram (.pt2), TorchScript, state dict + class, trusted pickles."""

from __future__ import annotations

import importlib
import inspect
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from ..errors import InputError, SpecError, UnsafeFormatError, first_line, require
from ..files import sha256
from ..quiet import quiet
from ..model_meta import ModelMeta
from ..spec import DimRange, TensorSpec, dynamic_batch as with_dynamic_batch, normalize_dtype, spec_ranges
from ..usercode import cwd_importable
from .base import SourceModel
from .pickle_source import refuse_pickle

SPEC_HINT = "pass --input NAME:DIMS[:DTYPE] for each forward() argument, e.g. --input x:1x3x224x224"


def load_torch_file(path: Path, specs, dynamic_batch: bool, model_class: str | None, model_kwargs, trust_pickle: bool) -> SourceModel:
    torch = require("torch", "torch")
    sha = sha256(path)
    if path.suffix.lower() == ".pt2":
        return from_torch_object(load_program(torch, path, trust_pickle), specs, dynamic_batch, path, "ExportedProgram (.pt2)", sha)
    if _is_torchscript(path):
        try:
            script = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways
            raise InputError(f"{path} is not a readable TorchScript file ({_reason(exc)}); the file may be truncated "
                             "or corrupt: save it again with torch.jit.save") from exc
        return from_torch_object(script, specs, dynamic_batch, path, "TorchScript", sha)
    obj = _torch_load(torch, path, trust_pickle)
    if isinstance(obj, torch.nn.Module):
        return from_torch_object(obj, specs, dynamic_batch, path, "pickled nn.Module (trusted)", sha)
    state = _state_dict_of(obj, torch)
    if state is None:
        raise InputError(f"{path} holds a {type(obj).__name__}, neither a model nor a state dict of tensors")
    if not model_class:
        raise InputError(
            f"{path} holds a state dict (weights only, {len(state)} tensors); "
            "pass --model-class module:Class (and --model-kwargs JSON) so edgeml can build the network"
        )
    module = build_module(state, model_class, model_kwargs, path)
    return from_torch_object(module, specs, dynamic_batch, path, f"state dict + {model_class}", sha)


def load_program(torch, path: Path, trust_pickle: bool):
    """An ExportedProgram from a .pt2 archive, read without pickle unless ``trust_pickle``.

    torch.export.load unpickles some records (weights and constants marked ``use_pickle``, custom and opaque
    objects, legacy weight files, and the sample inputs when they do not load with ``weights_only=True``)
    and runs AOTInductor code it finds. Those records are looked for first, in the same open file, and
    refused; what is left is tensors as raw bytes, JSON, and sample inputs that ``weights_only`` reads.
    """
    unreadable = "is not a readable torch.export archive"
    with open(path, "rb") as f:
        if not trust_pickle:
            _refuse_pickled_records(torch, f, path, unreadable)
            f.seek(0)
        try:
            with quiet():  # torch logs a traceback of its own for each archive it cannot read
                return torch.export.load(f)
        except Exception as exc:  # noqa: BLE001 - any failure means the archive is unusable
            raise InputError(f"{path} {unreadable} ({_reason(exc)}); save one with torch.export.save(ep, path)") from exc


def _refuse_pickled_records(torch, f, path: Path, unreadable: str) -> None:
    """Raise an UnsafeFormatError naming the first record that torch.export.load would unpickle (or run)."""
    from torch.export.pt2_archive import PT2ArchiveReader, constants as pt2

    def refuse(what: str) -> UnsafeFormatError:
        return refuse_pickle(path, what, "or save the program again with torch.export.save(ep, path) from a model of plain tensors")

    try:
        reader = PT2ArchiveReader(f)
        names = reader.get_file_names()
        f.seek(0)
        # torch.export.load falls back to the format of torch < 2.7, read with pickle, when an archive with a
        # top-level "version" fails to load; torch's reader refuses top-level records today, this in case it stops.
        legacy = "version" in zipfile.ZipFile(f).namelist()
    except Exception as exc:  # noqa: BLE001 - not a zip, not a PT2 archive, a damaged one
        raise InputError(f"{path} {unreadable} ({_reason(exc)}); save one with torch.export.save(ep, path)") from exc
    if legacy:
        raise refuse("an archive in the torch < 2.7 format (record version), which torch.export.load reads with pickle")
    compiled = [n for n in names if n.startswith(pt2.AOTINDUCTOR_DIR)]
    if compiled:
        raise refuse(f"AOTInductor compiled code (record {compiled[0]}), which torch.export.load would load and run")
    prefix, suffix = pt2.MODELS_FILENAME_FORMAT.split("{}")
    for model in (n[len(prefix):-len(suffix)] for n in names if n.startswith(pt2.MODELS_DIR)):  # as torch names them
        pickled = [pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model), f"{pt2.WEIGHTS_DIR}{model}.pt", f"{pt2.CONSTANTS_DIR}{model}.pt"]
        for record in (r for r in pickled if r in names):
            data = reader.read_bytes(record)
            if data and not _loads_weights_only(torch, data):
                raise refuse(f"pickled Python objects in record {record}, which torch.export.load would unpickle")
        for config, folder, kind in ((pt2.WEIGHTS_CONFIG_FILENAME_FORMAT, pt2.WEIGHTS_DIR, "weight"),
                                     (pt2.CONSTANTS_CONFIG_FILENAME_FORMAT, pt2.CONSTANTS_DIR, "constant")):
            record = config.format(model)
            if record not in names:
                continue
            try:
                entries = json.loads(reader.read_string(record))["config"]
                for name, entry in entries.items():
                    if entry.get("use_pickle") or (kind == "constant" and not entry["path_name"].startswith(pt2.TENSOR_CONSTANT_FILENAME_PREFIX)):
                        raise refuse(f"a pickled {kind} {name!r} (record {folder}{entry['path_name']}), which torch.export.load would unpickle")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise InputError(f"{path} {unreadable} ({record}: {first_line(exc)}); save one with torch.export.save(ep, path)") from exc


def _reason(exc: Exception) -> str:
    """The first sentence of a torch error: its archive errors go on with advice meant for torch's developers."""
    return first_line(exc).split(". ")[0]


def _loads_weights_only(torch, data: bytes) -> bool:
    """Whether torch.load reads ``data`` with ``weights_only=True``: tensors and containers, no code."""
    try:
        torch.load(io.BytesIO(data), weights_only=True)  # as torch.export.load calls it first
    except Exception:  # noqa: BLE001 - any failure: torch.export.load would fall back to pickle
        return False
    return True


def _torch_load(torch, path: Path, trust_pickle: bool):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - sorted out below
        message = str(exc)
        if "weights_only" not in message.lower() and "unpickl" not in message.lower():
            raise InputError(f"{path} could not be read by torch.load ({_reason(exc)}); the file may be truncated or corrupt") from exc
        if not trust_pickle:
            raise refuse_pickle(path, "pickled Python objects (a whole nn.Module?), not just weights",
                                "or save model.state_dict() and use --model-class") from exc
    try:
        with cwd_importable():
            return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path} could not be unpickled ({first_line(exc)}); is the class it holds importable from here?") from exc


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _state_dict_of(obj: Any, torch) -> dict | None:
    """A state dict, also from the common checkpoint layout ``{"state_dict": ...}``."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    return None


def import_class(reference: str):
    """``package.module:Class`` to the class, importing from the current folder too."""
    module_name, _, class_name = reference.partition(":")
    if not module_name or not class_name:
        raise InputError(f"bad --model-class {reference!r}: write it as module:Class, e.g. mypkg.nets:Net")
    try:
        with cwd_importable():
            module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - import errors of user code come in every kind
        raise InputError(
            f"cannot import {module_name!r} for --model-class ({type(exc).__name__}: {exc}); "
            "run edgeml from the folder that holds it, or install its package"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise InputError(f"module {module_name!r} has no {class_name!r} for --model-class")
    return cls


def build_module(state: dict, model_class: str, model_kwargs, path: Path):
    torch = require("torch", "torch")
    cls = import_class(model_class)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise InputError(f"--model-class {model_class} names {cls!r}, not a torch.nn.Module class; "
                         "name the class of the network the state dict was saved from")
    try:
        kwargs = json.loads(model_kwargs) if isinstance(model_kwargs, str) else (model_kwargs or {})
    except json.JSONDecodeError as exc:
        raise InputError(f"--model-kwargs is not valid JSON ({exc}); write it like '{{\"hidden\": 64}}'") from exc
    if not isinstance(kwargs, dict):
        raise InputError(f"--model-kwargs must be a JSON object of constructor arguments, like '{{\"hidden\": 64}}', got {model_kwargs!r}")
    try:
        module = cls(**kwargs)
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            f"{model_class}(**{kwargs}) failed ({type(exc).__name__}: {exc}); give its arguments with --model-kwargs JSON"
        ) from exc
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise InputError(f"{path} does not fit {model_class}: {first_line(exc, 2)}; check --model-class and --model-kwargs") from exc
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing keys {_few(result.missing_keys)}")
        if result.unexpected_keys:
            parts.append(f"unexpected keys {_few(result.unexpected_keys)}")
        raise InputError(f"{path} does not fit {model_class}: {'; '.join(parts)}; check --model-class and --model-kwargs")
    return module


def from_torch_object(model: Any, specs, dynamic_batch: bool, path: Path | None = None, fmt: str | None = None,
                      sha: str | None = None) -> SourceModel:
    torch = require("torch", "torch")
    notes = []
    if isinstance(model, torch.export.ExportedProgram):
        found = program_input_specs(model)
        if specs and [str(s) for s in specs] != [str(s) for s in found]:
            raise SpecError(
                f"the ExportedProgram carries its input specs ({', '.join(map(str, found))}); drop --input "
                "(or export it again with the shapes you want)"
            )
        specs = found
        fmt = fmt or "ExportedProgram"
    else:
        if not specs:
            raise SpecError(f"the PyTorch model {type(model).__name__} needs an input spec: {SPEC_HINT}")
        _check_arity(model, specs)
        if getattr(model, "training", False):
            model.eval()
            notes.append("switched the model to eval mode (Dropout off, BatchNorm running statistics)")
        fmt = fmt or ("TorchScript" if isinstance(model, torch.jit.ScriptModule) else "nn.Module")
    if dynamic_batch:
        specs = with_dynamic_batch(specs)
    ranges = spec_ranges(specs)  # recorded in the artifact's metadata, read by the export and the targets
    return SourceModel("torch", model, list(specs), fmt, path=str(path) if path else None, sha256=sha, notes=notes,
                       meta=ModelMeta().with_ranges(ranges) if ranges else None)


def program_input_specs(program) -> list[TensorSpec]:
    """Input specs of an ExportedProgram, symbolic dims (``s0``) kept as names (the symbol of the first input's
    first axis as ``batch``; another input's first axis with another symbol is another dim), with the range
    the program was exported for where it is finite (``Dim(name, min=, max=)``)."""
    user_inputs = set(program.graph_signature.user_inputs)
    bounds = {str(symbol): _finite_range(r.lower, r.upper) for symbol, r in program.range_constraints.items()}
    names: dict[str, str] = {}
    specs = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            if value is None or not hasattr(value, "shape"):
                raise SpecError(f"input {node.name!r} of the ExportedProgram is not a tensor; edgeml exports tensor inputs only")
            shape, ranges = [], {}
            for i, d in enumerate(value.shape):
                if isinstance(d, int):
                    shape.append(int(d))
                    continue
                if i == 0 and "batch" not in names.values():
                    names.setdefault(str(d), "batch")
                shape.append(names.get(str(d), str(d)))
                if bounds.get(str(d)):
                    ranges[shape[-1]] = bounds[str(d)]
            specs.append(TensorSpec(node.name, tuple(shape), normalize_dtype(str(value.dtype).replace("torch.", "")), ranges))
    return specs


def _finite_range(lower, upper) -> DimRange | None:
    """A program's range constraint as a DimRange; None when unbounded (torch's ``int_oo``) or not a range."""
    try:
        low, high = max(int(lower), 1), int(upper)
    except (TypeError, ValueError, AttributeError, OverflowError):  # int_oo has no int()
        return None
    return DimRange(low, high, high) if low < high else None


def _check_arity(model, specs) -> None:
    forward = getattr(model, "forward", None)
    try:
        params = [p for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return  # TorchScript and C++ modules hide their signature
    required = [p for p in params if p.default is p.empty]
    if not (len(required) <= len(specs) <= len(params)):
        names = ", ".join(p.name for p in params)
        raise SpecError(
            f"{type(model).__name__}.forward({names}) takes {len(required)} input(s), got {len(specs)} --input; {SPEC_HINT}"
        )


def _few(keys, n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
