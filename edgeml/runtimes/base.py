"""The Runtime contract every backend implements, and the input checks they all share.

A backend subclass only opens its model and implements ``_run(feeds) -> list of arrays``; everything a
user touches (``inputs``, ``outputs``, ``run``, ``__call__``, ``predict``, the context manager, the
checks that turn a wrong array into a clear error) lives here once.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..spec import TensorSpec

#: Model metadata keys that tell a runtime which outputs hold a classifier's labels and probabilities.
LABEL_OUTPUT_KEY = "edgeml.label_output"
PROBA_OUTPUT_KEY = "edgeml.proba_output"


class _InputCheck:
    """A precomputed check for one input: cheap enough to run on every call."""

    __slots__ = ("name", "dtype", "ndim", "fixed", "spec", "is_str")

    def __init__(self, spec: TensorSpec):
        self.spec = spec
        self.name = spec.name
        self.dtype = spec.np_dtype
        self.is_str = spec.dtype == "str"
        self.ndim = len(spec.shape)
        self.fixed = tuple((i, d) for i, d in enumerate(spec.shape) if isinstance(d, int))

    def __call__(self, value: Any) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            value = to_numpy(value, self.name)
        if value.dtype != self.dtype:
            value = self._cast(value)
        if value.ndim != self.ndim:
            raise InputError(
                f"input {self.name!r} expects rank {self.ndim} (shape {format_shape(self.spec.shape)}), "
                f"got rank {value.ndim} (shape {format_shape(value.shape)}); reshape the array"
            )
        shape = value.shape
        for axis, size in self.fixed:
            if shape[axis] != size:
                raise InputError(
                    f"input {self.name!r} expects shape {format_shape(self.spec.shape)}, got {format_shape(shape)} "
                    f"(axis {axis} must be {size})"
                )
        return value

    def _cast(self, value: np.ndarray) -> np.ndarray:
        if self.dtype == np.float32 and value.dtype == np.float64:
            return value.astype(np.float32)
        if self.is_str and value.dtype.kind in "OUS":
            return value.astype(object)
        raise InputError(
            f"input {self.name!r} expects dtype {self.spec.dtype}, got {value.dtype}; "
            f"convert it with .astype(np.{self.dtype.name if not self.is_str else 'object'})"
        )


def to_numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the user's input
        raise InputError(f"input {name!r} cannot be turned into an array: {exc}") from exc


def format_shape(shape: Sequence) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


class Runtime:
    """One loaded model on one backend: ``run(feeds) -> dict``, ``m(*arrays)``, ``predict(X)``."""

    backend = "?"

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec], metadata: Mapping[str, str] | None = None,
                 device: str = "cpu", path: str | None = None, threads: int | None = None):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.metadata = dict(metadata or {})
        self.device = device
        self.path = path
        self.threads = threads
        self._checks = [_InputCheck(s) for s in self.inputs]
        self._output_names = [s.name for s in self.outputs]

    # -- the backend's part -------------------------------------------------------------------
    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Free the backend's resources; the runtime cannot run afterwards."""
        self._run = self._closed

    def _closed(self, feeds):
        raise InputError(f"this runtime ({self.path or self.backend}) was closed; load the model again")

    # -- the contract -------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on named inputs; returns every output by name."""
        if len(feeds) != len(self._checks) or any(c.name not in feeds for c in self._checks):
            self._raise_names(feeds)
        checked = {c.name: c(feeds[c.name]) for c in self._checks}
        return dict(zip(self._output_names, self._run(checked)))

    def __call__(self, *arrays: Any):
        """Run on positional inputs (in ``inputs`` order); one output comes back bare, several as a tuple."""
        if len(arrays) != len(self._checks):
            raise InputError(
                f"the model takes {len(self._checks)} input(s) ({', '.join(self.input_names)}), got {len(arrays)}"
            )
        results = self._run({c.name: c(a) for c, a in zip(self._checks, arrays)})
        return results[0] if len(results) == 1 else tuple(results)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self._output_names)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        ins = ", ".join(str(s) for s in self.inputs)
        outs = ", ".join(str(s) for s in self.outputs)
        return f"<{type(self).__name__} {self.path or ''} [{self.backend}/{self.device}] ({ins}) -> ({outs})>"

    # -- scikit-learn-like helpers -------------------------------------------------------------
    def feeds_from(self, X: Any) -> dict[str, np.ndarray]:
        """Named inputs from an array (one-input models), a dict, or a DataFrame (one input per column)."""
        if isinstance(X, Mapping):
            return dict(X)
        if hasattr(X, "columns") and len(self.inputs) > 1:
            missing = [n for n in self.input_names if n not in X.columns]
            if missing:
                raise InputError(
                    f"the DataFrame lacks column(s) {', '.join(map(repr, missing))}; "
                    f"the model takes the columns: {', '.join(self.input_names)}"
                )
            return {s.name: _column(X, s) for s in self.inputs}
        if len(self.inputs) != 1:
            raise InputError(
                f"the model takes {len(self.inputs)} inputs ({', '.join(self.input_names)}); "
                "pass a dict of arrays or a DataFrame with those columns"
            )
        values = X.to_numpy() if hasattr(X, "to_numpy") else X
        return {self.inputs[0].name: values}

    def predict(self, X: Any) -> np.ndarray:
        """Labels for a converted classifier, else the model's (first) output."""
        name = self.metadata.get(LABEL_OUTPUT_KEY, self._output_names[0])
        return self.run(self.feeds_from(X))[name]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of a converted classifier."""
        name = self.metadata.get(PROBA_OUTPUT_KEY)
        if name is None:
            raise InputError(
                f"{self.path or 'this model'} has no probability output; predict_proba works on converted classifiers"
            )
        return self.run(self.feeds_from(X))[name]

    def _raise_names(self, feeds: Mapping[str, Any]) -> None:
        missing = [n for n in self.input_names if n not in feeds]
        unknown = [n for n in feeds if n not in self.input_names]
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        if unknown:
            parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
        raise InputError("; ".join(parts) + f"; the model takes: {', '.join(str(s) for s in self.inputs)}")


def text_values(column: Any) -> np.ndarray:
    """A pandas column of text as an object array; a missing value becomes '', edgeml's missing text."""
    return column.astype(object).where(column.notna(), "").astype(str).to_numpy(dtype=object)


def _column(frame: Any, spec: TensorSpec) -> np.ndarray:
    """One DataFrame column as a (rows, 1) array of the input's dtype."""
    column = frame[spec.name]
    values = text_values(column) if spec.dtype == "str" else column.to_numpy(dtype=spec.np_dtype)
    return values.reshape(-1, 1)


def check_threads(threads: int | None) -> int | None:
    if threads is not None and int(threads) < 1:
        raise InputError(f"threads must be at least 1, got {threads}; leave it unset for the backend's default")
    return threads
