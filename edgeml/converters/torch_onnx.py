"""PyTorch -> ONNX with ``torch.onnx.export(dynamo=True)``; the TorchScript exporter only as a fallback. The
example call and the bounded dynamic shapes are shared with the other exports of a torch source (CoreML)."""

from __future__ import annotations

import io

from ..data import dim_ranges, random_feeds
from ..errors import ExportError, SpecError, first_line, require
from ..quiet import quiet
from ..runtimes.pytorch import output_names_for
from ..sources.base import SourceModel
from ..sources.torch_source import program_input_specs
from ..spec import batch_symbols

#: Opset for the TorchScript fallback (the dynamo exporter picks its own).
FALLBACK_OPSET = 18


def example_call(torch, source: SourceModel):
    """What every export of a torch source needs: example arguments, input and output names, each input's
    symbolic dims ({axis: name}) and each dim's bounds ((min, max) from a range, or the largest size).

    Symbolic dims get example sizes of 2 and 3 (torch.export specializes sizes 0 and 1), moved into their
    range. Token inputs get ids the model's vocabulary holds and masks of ones (a model may branch on an
    all-zero row)."""
    ranges = dim_ranges(source.inputs, source.meta)
    named, batches = {d for s in source.inputs for d in s.shape}, batch_symbols(source.inputs)
    example = {name: min(max(2 if name in batches else 3, r.min), r.max) for name, r in ranges.items() if name in named}
    feeds = random_feeds(source.inputs, batch=2, other=3, meta=source.meta, sizes=example)
    args = tuple(torch.from_numpy(feeds[s.name]) for s in source.inputs)
    runnable = source.model.module() if isinstance(source.model, torch.export.ExportedProgram) else source.model
    try:
        with torch.inference_mode(), quiet():
            output_names = output_names_for(runnable(*args))
    except Exception as exc:  # noqa: BLE001 - the model rejects inputs of the given specs
        raise SpecError(
            f"the model fails on inputs {', '.join(map(str, source.inputs))} ({type(exc).__name__}: {first_line(exc)}); "
            "fix --input: one spec per forward() argument, with the shape and dtype it takes"
        ) from exc
    input_names = [s.name for s in source.inputs]
    symbols = [{axis: dim for axis, dim in enumerate(s.shape) if isinstance(dim, str)} for s in source.inputs]
    bounds = {**(source.meta.dim_max if source.meta else {}), **{k: (r.min, r.max) for k, r in ranges.items()}}
    return args, input_names, output_names, symbols, bounds


def dynamic_shapes(torch, symbols, bounds):
    """torch.export's ``dynamic_shapes`` for the inputs' symbolic dims, one ``Dim`` per name, bounded by
    ``bounds`` (a dim without one is bounded below by 1 only)."""
    if not any(symbols):
        return None
    dims = {}

    def dim(name):
        low, high = bounds[name] if isinstance(bounds.get(name), tuple) else (1, bounds.get(name))
        return torch.export.Dim(_dim_name(name), min=low, max=high)

    return tuple({axis: dims.setdefault(name, dim(name)) for axis, name in s.items()} or None for s in symbols)


def torch_to_onnx(source: SourceModel, opset: int | None = None):
    """Export ``source`` (torch); returns ``(ModelProto, record)``. Says which exporter was used and why."""
    torch = require("torch", "torch")
    onnx = require("onnx", "torch")
    model = source.model
    if isinstance(model, torch.export.ExportedProgram) and fixes_a_symbolic_dim(model, source.inputs):
        raise ExportError(
            f"{source.path or 'the ExportedProgram'} was exported with fixed shapes ({', '.join(map(str, program_input_specs(model)))}), "
            "so its batch cannot be made dynamic; export it with dynamic_shapes=... or drop --dynamic-batch"
        )
    args, input_names, output_names, symbols, bounds = example_call(torch, source)
    record = {"exporter": "torch.onnx dynamo", "torch": torch.__version__}
    try:
        proto = _dynamo_export(torch, model, args, input_names, output_names, symbols, opset, bounds)
        if opset is not None and _default_opset(proto) != opset:
            raise ExportError(f"the dynamo exporter wrote opset {_default_opset(proto)}, not the {opset} asked for")
    except Exception as dynamo_exc:  # noqa: BLE001 - any exporter failure leads to the fallback
        dynamo_reason = root_cause(dynamo_exc)
        if isinstance(model, torch.export.ExportedProgram):
            model = model.module()
        try:
            proto = _torchscript_export(torch, onnx, model, args, input_names, output_names, symbols, opset)
        except Exception as ts_exc:  # noqa: BLE001
            raise ExportError(
                f"cannot export {type(source.model).__name__} to ONNX: the dynamo exporter says: {dynamo_reason}; "
                f"the TorchScript exporter says: {root_cause(ts_exc)}; rewrite or replace that op, or export a .pt2 "
                "with torch.export to see where it fails"
            ) from ts_exc
        record = {"exporter": "torch.onnx TorchScript (fallback)", "torch": torch.__version__,
                  "fallback_reason": dynamo_reason}
    return proto, record


def _default_opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def fixes_a_symbolic_dim(program, specs) -> bool:
    found = program_input_specs(program)
    return any(isinstance(want, str) and isinstance(have, int)
               for f, s in zip(found, specs) for have, want in zip(f.shape, s.shape))


def _dynamo_export(torch, model, args, input_names, output_names, symbols, opset, bounds):
    """``bounds``: a symbolic dim's (min, max) range, or its largest size (a sequence bounded by the model's
    position table); torch.export then proves the graph for those sizes and its program refuses others."""
    shapes = None if isinstance(model, torch.export.ExportedProgram) else dynamic_shapes(torch, symbols, bounds)
    with quiet():
        program = torch.onnx.export(
            model, args, dynamo=True, input_names=input_names, output_names=output_names,
            dynamic_shapes=shapes, opset_version=opset, optimize=True, verbose=False,
        )
    return program.model_proto


def _torchscript_export(torch, onnx, model, args, input_names, output_names, symbols, opset):
    buffer = io.BytesIO()
    dynamic_axes = {name: s for name, s in zip(input_names, symbols) if s} or None
    with quiet():
        torch.onnx.export(
            model, args, buffer, dynamo=False, input_names=input_names, output_names=output_names,
            dynamic_axes=dynamic_axes, opset_version=opset or FALLBACK_OPSET,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    if opset is not None and _default_opset(proto) != opset:
        raise ExportError(f"the TorchScript exporter wrote opset {_default_opset(proto)}, not the {opset} asked for")
    return proto


def _dim_name(symbol: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in symbol)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"d_{cleaned}"


def root_cause(exc: BaseException) -> str:
    """The innermost cause's first line: the exporters wrap the useful message in generic ones."""
    seen = exc
    while seen.__cause__ is not None and seen.__cause__ is not seen:
        seen = seen.__cause__
    return f"{type(seen).__name__}: {first_line(seen)}"
