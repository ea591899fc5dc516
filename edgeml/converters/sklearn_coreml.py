"""scikit-learn -> CoreML. coremltools' scikit-learn converter exists only beside scikit-learn <= 1.5.1
(coremltools disables it above), and it writes classic Core ML models (pipelines of Core ML's own scalers,
trees and GLMs taking one row per prediction), which edgeml's CoreML runtime and checks, made for mlprogram
packages, do not read yet. So the edge says which of the two stops it, and points to the ONNX target."""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendMissing, require
from ..runtimes.coreml import coremltools
from ..sources.base import SourceModel


def sklearn_to_coreml(source: SourceModel, out: Path, options: dict) -> dict:
    """Exit 3, naming scikit-learn's version limit when that is what stops it."""
    ct = coremltools()
    sklearn = require("sklearn", "sklearn")
    from coremltools import _deps

    if not _deps._HAS_SKLEARN:
        raise BackendMissing(
            f"coremltools {ct.__version__} converts scikit-learn models only beside scikit-learn "
            f"{_deps._SKLEARN_MIN_VERSION} to {_deps._SKLEARN_MAX_VERSION}, and this is {sklearn.__version__}: "
            "ship --to onnx (onnxruntime's mobile build runs it on iOS), or --to ort")
    raise BackendMissing("edgeml does not convert scikit-learn models to CoreML yet (coremltools writes classic "
                         "Core ML models for them, which edgeml's CoreML checks do not read): ship --to onnx "
                         "(onnxruntime's mobile build runs it on iOS), or --to ort")
