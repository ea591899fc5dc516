"""Core ML runtime: a ``.mlpackage`` predicted by coremltools, which can only on macOS. Written against
coremltools' documented ``MLModel(path, compute_units=...)`` / ``predict`` API; CI (Linux) cannot run it,
so elsewhere it refuses at once with where it runs (exit 3)."""

from __future__ import annotations

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


#: mlprogram element types -> edgeml dtypes (ArrayFeatureType.ArrayDataType numbers).
_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}


class CoreMLRuntime(Runtime):
    backend = "coreml"

    def __init__(self, path, device: str = "cpu", threads: int | None = None):
        """``device``: "cpu" runs on the CPU only (CPU_ONLY); anything else lets Core ML pick the GPU and the
        Neural Engine too (ALL)."""
        path = Path(path)
        if sys.platform != "darwin":
            raise BackendMissing(f"{path.name}: CoreML packages run only on macOS (Core ML predicts there, not on "
                                 f"{platform.system()}); here inspect and verify them, or run the .onnx artifact")
        ct = coremltools()
        inputs, outputs, metadata, _ = describe(path)
        units = getattr(ct.ComputeUnit, "CPU_ONLY" if device == "cpu" else "ALL")
        self._model = ct.models.MLModel(str(path), compute_units=units)
        super().__init__(inputs, outputs, metadata, device=device, path=str(path), threads=threads)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._model.predict(feeds)
        return [np.asarray(result[name]) for name in self._output_names]


def describe(path: Path):
    """Inputs (with their ranges), outputs and metadata from the package's spec, without loading the model."""
    ct = coremltools()
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged package
        raise InputError(f"{path} is not a readable CoreML package ({first_line(exc)}); convert it again") from exc

    def tensor(feature, index: int) -> TensorSpec:
        array = feature.type.multiArrayType
        shape, ranges = [], {}
        for axis, (size, bounds) in enumerate(zip(array.shape, array.shapeRange.sizeRanges or [None] * len(array.shape))):
            if bounds is not None and bounds.lowerBound != bounds.upperBound:
                name = "batch" if axis == 0 else f"{feature.name}_dim{axis}"
                upper = bounds.upperBound if bounds.upperBound > 0 else None
                shape.append(name)
                if upper:
                    ranges[name] = DimRange(bounds.lowerBound, upper, upper)
            else:
                shape.append(int(size))
        return TensorSpec(feature.name, tuple(shape), _DTYPES.get(array.dataType, "float32"), ranges=ranges)

    inputs = [tensor(f, i) for i, f in enumerate(spec.description.input)]
    outputs = [TensorSpec(f.name, tuple(int(d) for d in f.type.multiArrayType.shape) or ("?",),
                          _DTYPES.get(f.type.multiArrayType.dataType, "float32")) for f in spec.description.output]
    return inputs, outputs, dict(spec.description.metadata.userDefined), spec
