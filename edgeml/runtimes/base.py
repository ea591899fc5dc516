"""The Runtime contract every backend implements, and the input checks they all share.

A backend subclass only opens its model and implements ``_run(feeds) -> list of arrays``; everything a
user touches (``inputs``, ``outputs``, ``run``, ``__call__``, ``predict``, the context manager, the
checks that turn a wrong array into a clear error) lives here once.
"""

from __future__ import annotations

import functools
import itertools
import time
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import InputError, SpecError, first_line
from ..model_meta import input_meta
from ..spec import TensorSpec, format_shape

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
            with np.errstate(over="ignore"):  # beyond float32's range is inf, as the model would compute it
                return value.astype(np.float32)
        if self.is_str and value.dtype.kind in "OUS":
            return value.astype(object)
        raise InputError(
            f"input {self.name!r} expects dtype {self.spec.dtype}, got {value.dtype}; "
            f"convert it with .astype(np.{self.dtype.name if not self.is_str else 'object'})"
        )


def to_numpy(value: Any, name: str) -> np.ndarray:
    try:
        if hasattr(value, "detach"):  # a torch tensor
            return value.detach().cpu().numpy()
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the user's input
        raise InputError(f"input {name!r} cannot be turned into an array ({type(exc).__name__}: {first_line(exc)}); "
                         "pass a numpy array") from exc


class Runtime:
    """One loaded model on one backend: ``run(feeds) -> dict``, ``m(*arrays)``, ``predict(X)``."""

    backend = "?"
    #: The packages it computes with, whose versions a measurement records (``environment.fingerprint``).
    tools: tuple[str, ...] = ()

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec], metadata: Mapping[str, str] | None = None,
                 device: str = "cpu", path: str | None = None, threads: int | None = None):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.metadata = dict(metadata or {})
        self.device = device
        self.path = path
        self.threads = threads
        try:
            self._checks = [_InputCheck(s) for s in self.inputs]
        except SpecError as exc:  # an input type no array can have (bfloat16, float8...)
            raise SpecError(f"{self.what}: {exc}") from exc
        self._output_names = [s.name for s in self.outputs]

    @property
    def what(self) -> str:
        """The model as messages name it: its file, else its backend."""
        return str(self.path) if self.path else f"the {self.backend} model"

    # -- the backend's part -------------------------------------------------------------------
    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Free the backend's resources; the runtime cannot run afterwards."""
        self._run = self._closed

    def _closed(self, feeds):
        raise InputError(f"this runtime ({self.what}) was closed; load the model again")

    # -- the contract -------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run on named inputs; returns every output by name."""
        try:
            if type(feeds) is not dict and not isinstance(feeds, Mapping) or len(feeds) != len(self._checks):
                self._raise_names(feeds)
            checked = {c.name: c(feeds[c.name]) for c in self._checks}
        except (KeyError, TypeError, IndexError):  # a missing name, or ``feeds`` is not a mapping
            self._raise_names(feeds)
            raise
        return dict(zip(self._output_names, self._run(checked)))

    def __call__(self, *arrays: Any):
        """Run on positional inputs (in ``inputs`` order); one output comes back bare, several as a tuple."""
        if len(arrays) != len(self._checks):
            self._raise_count(arrays)
        results = self._run({c.name: c(a) for c, a in zip(self._checks, arrays)})
        return results[0] if len(results) == 1 else tuple(results)

    @property
    def providers(self) -> list[str]:
        """The backend really in use, most preferred first: onnxruntime's execution providers, else the device."""
        return [self.device]

    def bench_call(self, batches: list[dict]) -> tuple[Callable[[], object], dict]:
        """What ``edgeml bench`` times: a call that runs the next of ``batches`` (in turn), and the copies it
        leaves out ({} here: on the CPU a call is ``run``, numpy in and out, as an app makes it). A runtime on a
        GPU keeps the inputs and outputs on the device, copied there once, so that a call is the device's work
        alone, waited for; it returns the copy times apart (``host_to_device_ms``, ``device_to_host_ms``)."""
        following = itertools.cycle(batches).__next__
        return (lambda: self.run(following())), {}

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

    # -- what the model's inputs mean, and text --------------------------------------------------
    @functools.cached_property
    def meta(self):
        """The model's ``ModelMeta``, completed from its input names and graph (``model_meta.input_meta``)."""
        return input_meta(self)

    @functools.cached_property
    def text_encoder(self):
        """The artifact's tokenizer bound to its inputs (``edgeml.text.TextEncoder``): ``m.text_encoder(texts)``
        gives the feeds; an InputError for an artifact without one."""
        from ..text import TextEncoder

        return TextEncoder.of(self)

    def encode(self, texts, *, batch_size: int | None = None):
        """Tokenize ``texts`` with the artifact's tokenizer and run the model (``batch_size`` texts a call;
        default 32). Returns embeddings as a float32 (texts, dim) array for a feature-extraction model (its
        ``sentence_embedding`` output, else ``last_hidden_state`` mean-pooled over real tokens), an
        ``edgeml.text.Classified`` (labels, scores, probabilities, classes) for a classifier, or the scores
        of a regression head. Needs
        ``pip install "edgeml[text]"``; imports no torch or transformers."""
        from ..text import encode

        return encode(self, texts, batch_size=batch_size)

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
                f"{self.what} takes no inputs; call m() or m.run({{}})" if not self.inputs else
                f"the model takes {len(self.inputs)} inputs ({', '.join(self.input_names)}); "
                "pass a dict of arrays or a DataFrame with those columns"
            )
        values = X.to_numpy() if hasattr(X, "to_numpy") else X
        return {self.inputs[0].name: values}

    def predict(self, X: Any) -> np.ndarray:
        """The labels output of a converted scikit-learn classifier (its metadata names it), else the
        model's first output as it is: a PyTorch classifier gives its logits (labels: ``.argmax(-1)``)."""
        return self.run(self.feeds_from(X))[self._named_output(LABEL_OUTPUT_KEY, self._output_names[0])]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of a converted classifier."""
        name = self._named_output(PROBA_OUTPUT_KEY, None)
        if name is None:
            raise InputError(
                f"{self.what} has no probability output; predict_proba works on converted scikit-learn classifiers"
            )
        return self.run(self.feeds_from(X))[name]

    def _named_output(self, key: str, default: str | None) -> str | None:
        name = self.metadata.get(key, default)
        if name is not None and name not in self._output_names:
            raise InputError(f"{self.what}: its metadata {key}={name!r} names no output of the model "
                             f"({', '.join(self._output_names)}); use m.run(feeds) and pick the output")
        return name

    def _raise_count(self, arrays: tuple) -> None:
        if not self._checks:
            raise InputError(f"{self.what} takes no inputs, got {len(arrays)}; call m() or m.run({{}})")
        hint = ""
        if len(arrays) == 1 and (hasattr(arrays[0], "columns") or isinstance(arrays[0], Mapping)):
            hint = ("; m(...) takes one array per input, in order: for a DataFrame with one column per input "
                    "call m.predict(df), for a dict of arrays by name m.run(feeds)")
        raise InputError(
            f"the model takes {len(self._checks)} input(s) ({', '.join(self.input_names)}), got {len(arrays)}{hint}"
        )

    def _raise_names(self, feeds: Any) -> None:
        """Say what is wrong with ``feeds``' names; returns if nothing is."""
        takes = f"the model takes: {', '.join(str(s) for s in self.inputs) or 'no inputs'}"
        if not isinstance(feeds, Mapping):
            hint = "m.predict(df)" if hasattr(feeds, "columns") else "m(*arrays) for arrays in input order"
            raise InputError(f"run() takes a dict of arrays by input name, not a {type(feeds).__name__}; "
                             f"use {hint}; {takes}")
        missing = [n for n in self.input_names if n not in feeds]
        unknown = [n for n in feeds if n not in self.input_names]
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        if unknown:
            parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
        if parts:
            raise InputError("; ".join(parts) + f"; {takes}")


def text_values(column: Any) -> np.ndarray:
    """A pandas column of text as an object array; a missing value becomes '', edgeml's missing text."""
    return column.astype(object).where(column.notna(), "").astype(str).to_numpy(dtype=object)


def _column(frame: Any, spec: TensorSpec) -> np.ndarray:
    """One DataFrame column as a (rows, 1) array of the input's dtype."""
    column = frame[spec.name]
    try:
        values = text_values(column) if spec.dtype == "str" else column.to_numpy(dtype=spec.np_dtype)
    except (TypeError, ValueError) as exc:  # text in a number column, a missing value in an integer one
        raise InputError(f"DataFrame column {spec.name!r} cannot be read as {spec.dtype} ({first_line(exc)}); "
                         "fix the column's values or dtype") from exc
    return values.reshape(-1, 1)


#: The most intra-op threads a runtime may start. A fixed number, not one tied to this machine's cores: a
#: command or baseline that works on a developer's 32-core box must not be refused on a 2-core CI runner.
MAX_THREADS = 256


def median_ms(action: Callable[[], object], repeats: int = 5) -> float:
    """The median wall time of ``repeats`` runs of ``action`` (a device copy), in ms."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        action()
        times.append(time.perf_counter_ns() - start)
    return float(np.median(times)) / 1e6


def check_threads(threads: int | None) -> int | None:
    """``threads`` as an int in [1, MAX_THREADS], or None (the backend's default)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise InputError(f"threads must be a whole number, got {threads!r}; leave it unset for the backend's default")
    if threads < 1:
        raise InputError(f"threads must be at least 1, got {threads}; leave it unset for the backend's default")
    if threads > MAX_THREADS:
        raise InputError(f"threads {threads} is above the limit of {MAX_THREADS}; use at most the machine's core count, "
                         "or leave it unset for the backend's default")
    return int(threads)
