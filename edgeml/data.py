"""Input arrays for checks and benchmarks: generated from specs with a fixed seed, or read from a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError, SpecError, no_such_file, require
from .spec import TensorSpec

DEFAULT_SEED = 0
#: Size given to symbolic dims other than the batch (a sequence length, an image side) in generated data.
OTHER_DIM = 8


def random_feeds(specs: list[TensorSpec], batch: int = 1, seed: int = DEFAULT_SEED, other: int = OTHER_DIM) -> dict[str, np.ndarray]:
    """Deterministic inputs for ``specs``: standard normal floats, small non-negative integers, random bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = spec.concrete_shape(batch=batch, other=other)
        kind = spec.np_dtype.kind
        if kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.np_dtype)
        elif kind in "iu":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(spec.np_dtype)
        elif kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise SpecError(
                f"cannot generate values for text input {spec.name!r}; give real rows with --data FILE (or --sample for scikit-learn)"
            )
    return feeds


def read_feeds(path: str | Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Inputs from a file: ``.npy`` (one-input models), ``.npz`` (an array per input name), ``.csv`` (columns)."""
    path = Path(path)
    if not path.is_file():
        raise no_such_file(path, "data file")
    suffix = path.suffix.lower()
    names = [s.name for s in specs]
    if suffix == ".npy":
        if len(specs) != 1:
            raise InputError(f"{path} holds one array but the model takes {len(specs)} inputs ({', '.join(names)}); use an .npz with one array per input")
        feeds = {names[0]: np.load(path, allow_pickle=False)}
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            missing = [n for n in names if n not in archive.files]
            if missing:
                raise InputError(f"{path} lacks array(s) for input(s) {', '.join(map(repr, missing))}; it holds {', '.join(archive.files)}")
            feeds = {n: archive[n] for n in names}
    elif suffix == ".csv":
        feeds = _csv_feeds(path, specs)
    else:
        raise InputError(f"unknown data suffix {path.suffix!r} for {path}; use .npy, .npz or .csv")
    return {s.name: _as_spec_dtype(feeds[s.name], s, path) for s in specs}


def _csv_feeds(path: Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    pd = require("pandas", "sklearn")
    frame = pd.read_csv(path)
    if len(specs) == 1 and specs[0].name not in frame.columns:
        return {specs[0].name: frame.to_numpy()}
    missing = [s.name for s in specs if s.name not in frame.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(map(repr, missing))} for the model's inputs")
    from .runtimes.base import text_values

    return {s.name: (text_values(frame[s.name]) if s.dtype == "str" else frame[s.name].to_numpy()).reshape(-1, 1)
            for s in specs}


def _as_spec_dtype(array: np.ndarray, spec: TensorSpec, path: Path) -> np.ndarray:
    if spec.dtype == "str":
        return array.astype(object)
    if array.dtype == spec.np_dtype:
        return array
    if array.dtype.kind == spec.np_dtype.kind or (array.dtype.kind in "iu" and spec.np_dtype.kind == "f"):
        return array.astype(spec.np_dtype)
    raise InputError(f"{path}: input {spec.name!r} expects {spec.dtype}, the file holds {array.dtype}")
