"""PyTorch -> CoreML (an mlprogram ``.mlpackage``) with coremltools, from the source model itself: coremltools
has no ONNX frontend since 6.0. The program is ``torch.export``-ed with the same example call and bounded
dims as the ONNX export, so every flexible dim becomes a finite ``RangeDim``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ExportError, InputError, first_line, require
from ..quiet import quiet
from ..runtimes.coreml import DIM_NAMES, coremltools
from ..sources.base import SourceModel
from ..sources.torch_source import program_input_specs
from .torch_onnx import fixes_a_symbolic_dim, dynamic_shapes, example_call


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
    if isinstance(model, torch.export.ExportedProgram):
        if fixes_a_symbolic_dim(model, source.inputs):
            raise ExportError(f"{source.path or 'the ExportedProgram'} was exported with fixed shapes "
                              f"({', '.join(map(str, program_input_specs(model)))}), so its dims cannot be flexible; "
                              "export it with dynamic_shapes=... or drop --dynamic-batch")
        model = model.module()  # exported again below, so that the package gets exactly these bounds
    try:
        with quiet():
            program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes(torch, symbols, bounds))
            package = ct.convert(program.run_decompositions({}), convert_to="mlprogram",
                                 minimum_deployment_target=getattr(ct.target, options["min_target"]),
                                 compute_precision=getattr(ct.precision, options["precision"].replace("fp", "FLOAT")),
                                 compute_units=getattr(ct.ComputeUnit, options["compute_units"]),
                                 outputs=[ct.TensorType(name=name, dtype=np.float32) for name in output_names])
    except Exception as exc:  # noqa: BLE001 - torch.export's and coremltools' errors name the op that fails
        raise ExportError(f"coremltools {ct.__version__} cannot convert {source.path or type(source.model).__name__} "
                          f"({type(exc).__name__}: {first_line(exc)}); replace that op, or ship the ONNX target") from exc
    # what the artifact says of itself, and its inputs' dim names, which the package's spec does not keep
    dims = {s.name: [d if isinstance(d, str) else None for d in s.shape] for s in source.inputs}
    package.user_defined_metadata.update({**(source.meta.to_props() if source.meta else {}),
                                          DIM_NAMES: json.dumps(dims)})
    package.save(str(out))
    return {"converter": "coremltools", "version": ct.__version__, "torch": torch.__version__,
            "format": "mlprogram", "precision": options["precision"], "minimum_deployment_target": options["min_target"],
            "compute_units": options["compute_units"], "outputs": output_names}
