"""SourceModel: a loaded source model and its input specs (``sources.reference`` runs it: what every artifact is
checked against)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model_meta import ModelMeta
from ..spec import TensorSpec


@dataclass
class SourceModel:
    kind: str  # its framework (``sources.FRAMEWORKS``): a Hugging Face folder loads as "torch"
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

    def to_record(self) -> dict:
        return {
            "file": self.path,
            "sha256": self.sha256,
            "framework": self.kind,
            "format": self.format,
            "inputs": [s.to_dict() for s in self.inputs],
        }
