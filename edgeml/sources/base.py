"""SourceModel: a loaded source model, its input specs, and the reference runtime it is checked against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model_meta import ModelMeta
from ..spec import TensorSpec


@dataclass
class SourceModel:
    kind: str  # "torch", "sklearn" or "onnx" (a Hugging Face folder loads as "torch")
    model: Any
    inputs: list[TensorSpec]
    format: str  # how it was stored: "ExportedProgram (.pt2)", "state dict + pkg:Net", "skops", ...
    path: str | None = None
    sha256: str | None = None
    #: sklearn: the estimator was fitted on a DataFrame; each input is one column.
    columns: bool = False
    #: rows the user gave with --sample, reused as check inputs when no --data is given.
    sample: dict[str, np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)
    #: what the artifact says about itself (task, labels, input roles...), written into its ONNX metadata.
    meta: ModelMeta | None = None
    #: a tokenizer.json to copy beside the artifact (Hugging Face folders).
    tokenizer: str | None = None

    def reference(self, device: str = "cpu", threads: int | None = None):
        """A Runtime running the source itself: what every artifact is compared with."""
        if self.kind == "torch":
            from ..runtimes.pytorch import TorchRuntime, place_on

            module = place_on(self.model, device)
            return TorchRuntime(module, self.inputs, device=device, path=self.path, threads=threads)
        if self.kind == "sklearn":
            from ..runtimes.base import check_threads
            from ..runtimes.sklearn import SklearnRuntime

            check_threads(threads)  # scikit-learn has no thread setting here, but a bad value is still the user's error
            return SklearnRuntime(self.model, self.inputs, columns=self.columns, path=self.path)
        from ..runtimes.onnxrt import OnnxRuntime

        return OnnxRuntime(self.path or self.model.SerializeToString(), device=device, threads=threads)

    def to_record(self) -> dict:
        return {
            "file": self.path,
            "sha256": self.sha256,
            "framework": self.kind,
            "format": self.format,
            "inputs": [s.to_dict() for s in self.inputs],
        }
