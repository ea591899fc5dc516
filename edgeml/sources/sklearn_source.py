"""scikit-learn sources: fitted estimators and Pipelines, from objects, ``.skops`` files or trusted pickles.

Input specs come from the user (``--input``), from a few sample rows (``--sample``: a DataFrame gives
one input per column, as skl2onnx expects), or from the estimator's ``n_features_in_``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, SpecError, UnsafeFormatError, first_line, no_such_file, require
from ..runtimes.base import text_values
from ..spec import TensorSpec
from .base import SourceModel

#: Modules whose types skops may load without asking: library code, not code from the file.
_LIBRARY_MODULES = ("sklearn.", "numpy.", "scipy.")


def load_skops(path: Path, trust_pickle: bool) -> Any:
    sio = require("skops.io", "sklearn")
    try:
        untrusted = sio.get_untrusted_types(file=str(path))
        foreign = [t for t in untrusted if not t.startswith(_LIBRARY_MODULES)]
        if foreign and not trust_pickle:
            raise UnsafeFormatError(
                f"{path} holds types outside scikit-learn/numpy/scipy ({', '.join(foreign[:5])}) that loading would "
                "import and run; pass --trust-pickle if you trust the file"
            )
        return sio.load(str(path), trusted=untrusted)
    except UnsafeFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad archive fails in many ways
        raise InputError(f"{path} is not a readable skops file ({first_line(exc)}); save one with skops.io.dump(model, path)") from exc


def from_estimator(model: Any, specs, sample, path: Path | None = None, fmt: str | None = None,
                   sha: str | None = None) -> SourceModel:
    require("sklearn", "sklearn")
    _check_fitted(model)
    frame = read_sample(sample) if isinstance(sample, (str, Path)) else sample
    by_column = hasattr(model, "feature_names_in_") and (selects_columns(model) or _has_text(frame))
    sample_feeds = None
    if specs:
        if by_column and [s.name for s in specs] != [str(c) for c in model.feature_names_in_]:
            raise SpecError(
                f"{type(model).__name__} selects DataFrame columns by name ({', '.join(map(str, model.feature_names_in_[:6]))}...); "
                "give --sample rows.csv with those columns instead of --input"
            )
        specs = [s.with_batch("batch") for s in specs]
        _check_features(model, specs)
        if frame is not None and len(specs) == 1:
            sample_feeds = {specs[0].name: _numeric_rows(frame, model)}
    elif by_column:
        if frame is None or not hasattr(frame, "columns"):
            names = ", ".join(map(str, model.feature_names_in_[:8]))
            raise SpecError(
                f"the model was fitted on a DataFrame (columns {names}...); pass --sample FILE.csv with a few rows "
                "so edgeml knows each column's type"
            )
        specs, sample_feeds = column_specs(model, frame)
    elif frame is not None:
        values = _numeric_rows(frame, model)
        specs = [TensorSpec("X", ("batch", values.shape[1]), "float32")]
        sample_feeds = {"X": values}
    elif hasattr(model, "n_features_in_"):
        specs = [TensorSpec("X", ("batch", int(model.n_features_in_)), "float32")]
    else:
        raise SpecError(f"cannot tell the input of {type(model).__name__}; pass --input X:1xN_FEATURES or --sample FILE")
    return SourceModel("sklearn", model, specs, fmt or "estimator", path=str(path) if path else None, sha256=sha,
                       columns=by_column, sample=sample_feeds)


def walk_estimators(model):
    """``model`` and every estimator nested in it (Pipeline steps, ColumnTransformer and FeatureUnion parts)."""
    stack = [model]
    while stack:
        est = stack.pop()
        yield est
        stack.extend(step for _, step, *_ in getattr(est, "steps", []))
        stack.extend(t for _, t, *_ in getattr(est, "transformers_", []) if hasattr(t, "fit"))
        stack.extend(t for _, t in getattr(est, "transformer_list", []))


def selects_columns(model) -> bool:
    """Whether the model picks DataFrame columns by name (a ColumnTransformer): it needs one input per column."""
    from sklearn.compose import ColumnTransformer

    return any(isinstance(est, ColumnTransformer) for est in walk_estimators(model))


def _has_text(frame) -> bool:
    return hasattr(frame, "dtypes") and any(dtype.kind not in "biuf" for dtype in frame.dtypes)


def _numeric_rows(frame, model) -> np.ndarray:
    """Sample rows as one float32 matrix, columns in the order the model was fitted on."""
    if hasattr(frame, "columns") and hasattr(model, "feature_names_in_"):
        missing = [c for c in model.feature_names_in_ if c not in frame.columns]
        if missing:
            raise SpecError(f"the sample lacks the training column(s) {', '.join(map(repr, missing[:5]))}; give rows with every column")
        frame = frame[list(model.feature_names_in_)]
    values = frame.to_numpy() if hasattr(frame, "to_numpy") else np.asarray(frame)
    try:
        values = values.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"the sample has non-numeric values ({exc}) but the model takes numbers; give numeric rows") from exc
    expected = getattr(model, "n_features_in_", values.shape[-1])
    if values.ndim != 2 or values.shape[1] != expected:
        raise SpecError(f"the sample has shape {values.shape}, the model takes {expected} features per row")
    return values


def _check_features(model, specs) -> None:
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and len(specs) == 1 and specs[0].shape[-1] != expected:
        raise SpecError(f"--input {specs[0]} gives {specs[0].shape[-1]} features, the model was fitted on {expected}; "
                        f"use --input {specs[0].name}:1x{expected}")


def column_specs(model: Any, frame) -> tuple[list[TensorSpec], dict[str, np.ndarray]]:
    """One (batch, 1) input per training column: numbers as float32, text as strings."""
    missing = [c for c in model.feature_names_in_ if c not in frame.columns]
    if missing:
        raise SpecError(f"the sample lacks the training column(s) {', '.join(map(repr, missing))}; give rows with every column")
    specs, feeds = [], {}
    for name in model.feature_names_in_:
        column = frame[name]
        if column.dtype.kind in "biuf":
            # float32, as ONNX Runtime's ML ops (Imputer, TreeEnsemble) need; the check runs on these values.
            spec = TensorSpec(str(name), ("batch", 1), "float32")
            values = column.to_numpy(dtype=np.float32)
        else:
            spec = TensorSpec(str(name), ("batch", 1), "str")
            values = text_values(column)
        specs.append(spec)
        feeds[spec.name] = values.reshape(-1, 1)
    return specs, feeds


def read_sample(path: str | Path):
    """A few rows: ``.csv`` (a DataFrame, keeping text columns) or ``.npy`` (a 2-D array)."""
    path = Path(path)
    if not path.is_file():
        raise no_such_file(path, "sample file")
    if path.suffix.lower() == ".csv":
        pd = require("pandas", "sklearn")
        try:
            return pd.read_csv(path)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot read {path} as CSV ({first_line(exc)})") from exc
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.ndim != 2:
            raise InputError(f"{path} holds an array of shape {array.shape}; a sample is 2-D (rows x features)")
        return array
    raise InputError(f"unknown sample suffix {path.suffix!r} for {path}; use .csv or .npy")


def _check_fitted(model: Any) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise InputError(f"the {type(model).__name__} is not fitted; call fit() before converting it") from exc
    except TypeError:
        pass  # not an estimator check_is_fitted understands; the exporter will say more
