"""PyTorch -> CoreML (an mlprogram ``.mlpackage``) with coremltools, from the source model itself: coremltools
has no ONNX frontend since 6.0. The program is ``torch.export``-ed with the same example call and bounded
dims as the ONNX export, so every flexible dim becomes a finite ``RangeDim``."""

from __future__ import annotations

from pathlib import Path

from ..errors import ExportError, InputError, first_line, require
from ..quiet import quiet
from ..runtimes.coreml import coremltools
from ..sources.base import SourceModel
from .torch_onnx import dynamic_shapes, example_call


def torch_to_coreml(source: SourceModel, out: Path, options: dict) -> dict:
    """Write ``source`` as an mlprogram package at ``out`` with ``options`` (``backends.coreml.check_options``'s);
    returns the record of how."""
    torch = require("torch", "torch")
    ct = coremltools()
    args, input_names, output_names, symbols, bounds = example_call(torch, source)
    unbounded = [name for dims in symbols for name in dims.values() if bounds.get(name) is None]
    if unbounded:
        raise InputError(f"CoreML needs a finite range for the dim {unbounded[0]!r} (an unbounded one makes a slow "
                         f"package); give one: --shape {unbounded[0]}=1..32, or --input with a range such as x:1..32x...")
    model = source.model
    try:
        with quiet():
            if not isinstance(model, torch.export.ExportedProgram):
                model = torch.export.export(model, args, dynamic_shapes=dynamic_shapes(torch, symbols, bounds))
            program = model.run_decompositions({})
            package = ct.convert(program, convert_to="mlprogram",
                                 minimum_deployment_target=getattr(ct.target, options["min_target"]),
                                 compute_precision=getattr(ct.precision, options["precision"].replace("fp", "FLOAT")),
                                 compute_units=getattr(ct.ComputeUnit, options["compute_units"]))
    except Exception as exc:  # noqa: BLE001 - torch.export's and coremltools' errors name the op that fails
        raise ExportError(f"coremltools {ct.__version__} cannot convert {source.path or type(source.model).__name__} "
                          f"({type(exc).__name__}: {first_line(exc)}); replace that op, or ship the ONNX target") from exc
    spec = package.get_spec()
    names = {o.name: given for o, given in zip(spec.description.output, output_names)}
    for old, new in names.items():  # torch's node names ("linear") -> the source's output names
        if old != new:
            ct.utils.rename_feature(spec, old, new)
    package = ct.models.MLModel(spec, weights_dir=package.weights_dir, skip_model_load=True)
    package.user_defined_metadata.update(source.meta.to_props() if source.meta else {})  # what the artifact says of itself
    package.save(str(out))
    return {"converter": "coremltools", "version": ct.__version__, "torch": torch.__version__,
            "format": "mlprogram", "precision": options["precision"], "minimum_deployment_target": options["min_target"],
            "compute_units": options["compute_units"]}
