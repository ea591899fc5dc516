"""Core ML runtime: a ``.mlpackage`` predicted by coremltools, which can only on macOS. Written against
coremltools' documented ``MLModel(path, compute_units=...)`` / ``predict`` API; CI (Linux) cannot run it,
so elsewhere it refuses at once with where it runs (exit 3)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

from ..errors import BackendMissing, InputError, first_line, require
from ..quiet import quiet
from ..spec import DimRange, TensorSpec
from .base import Runtime


def coremltools():
    """coremltools, imported quietly: at import it warns about untested torch and scikit-learn versions and
    about native libraries only macOS has, none of which bears on converting or inspecting."""
    with quiet():
        return require("coremltools", "coreml")


#: Package metadata key of the source inputs' dim names ({input: [name or None per axis]}): a CoreML spec keeps
#: each dim's range but not its name.
DIM_NAMES = "edgeml.dim_names"
#: ArrayFeatureType.ArrayDataType numbers -> edgeml dtypes.
_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}


class CoreMLRuntime(Runtime):
    backend = "coreml"

    def __init__(self, path, device: str = "cpu", threads: int | None = None):
        """``device``: "cpu" runs on the CPU only (CPU_ONLY); anything else lets Core ML pick the GPU and the
        Neural Engine too (ALL)."""
        path = Path(path)
        if sys.platform != "darwin":
            raise BackendMissing(f"{path.name}: CoreML packages run only on macOS (Core ML predicts there, not on "
                                 f"{platform.system()}); here inspect and verify them, or run an ONNX artifact (--to onnx)")
        ct = coremltools()
        inputs, outputs, metadata, _ = describe(path)
        units = getattr(ct.ComputeUnit, "CPU_ONLY" if device == "cpu" else "ALL")
        try:
            self._model = ct.models.MLModel(str(path), compute_units=units)
        except Exception as exc:  # noqa: BLE001 - Core ML's compiler refuses a package
            raise InputError(f"Core ML cannot load {path} ({first_line(exc)}); convert it again") from exc
        super().__init__(inputs, outputs, metadata, device=device, path=str(path), threads=threads)

    def run(self, feeds):
        """Core ML takes int32 where the source took int64 (token ids) and float32 where it took bool (a
        mask): the same values, converted here, so that an app's or the check's arrays go in as they are."""
        return super().run({name: _as_coreml(name, value) for name, value in dict(feeds).items()})

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._model.predict(feeds)
        return [np.asarray(result[name]) for name in self._output_names]


def _as_coreml(name: str, value):
    value = np.asarray(value)
    if value.dtype == bool:
        return value.astype(np.float32)
    if value.dtype.kind in "iu" and value.dtype != np.int32:
        if value.size and (value.min() < np.iinfo(np.int32).min or value.max() > np.iinfo(np.int32).max):
            raise InputError(f"input {name!r} holds values beyond int32, which Core ML takes; give smaller ones")
        return value.astype(np.int32)
    return value


def describe(path: Path):
    """Inputs (with their ranges), outputs and metadata from the package's spec, without loading the model."""
    ct = coremltools()
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged package
        raise InputError(f"{path} is not a readable CoreML package ({first_line(exc)}); convert it again") from exc

    metadata = dict(spec.description.metadata.userDefined)
    try:
        names = json.loads(metadata.get(DIM_NAMES, "{}"))
    except ValueError:
        names = {}

    def dtype(feature) -> str:
        code = feature.type.multiArrayType.dataType
        if code not in _DTYPES:
            raise InputError(f"{path}: input or output {feature.name!r} has a Core ML array type ({code}) edgeml does "
                             "not read; convert it again with edgeml")
        return _DTYPES[code]

    def tensor(feature) -> TensorSpec:
        array = feature.type.multiArrayType
        given = names.get(feature.name) or []
        shape, ranges = [], {}
        for axis, (size, bounds) in enumerate(zip(array.shape, array.shapeRange.sizeRanges or [None] * len(array.shape))):
            if bounds is not None and bounds.lowerBound != bounds.upperBound:
                name = (given[axis] if axis < len(given) and given[axis] else None) or f"{feature.name}_dim{axis}"
                shape.append(name)
                if bounds.upperBound > 0:  # -1: unbounded
                    ranges[name] = DimRange(bounds.lowerBound, bounds.upperBound, bounds.upperBound)
            else:
                shape.append(int(size))
        return TensorSpec(feature.name, tuple(shape), dtype(feature), ranges=ranges)

    inputs = [tensor(f) for f in spec.description.input]
    # mlprogram outputs state no shape: "?" marks it unknown (its rank too)
    outputs = [TensorSpec(f.name, tuple(int(d) for d in f.type.multiArrayType.shape) or ("?",), dtype(f))
               for f in spec.description.output]
    return inputs, outputs, metadata, spec
