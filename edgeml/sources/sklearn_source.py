"""scikit-learn sources: fitted estimators and Pipelines, from objects, ``.skops`` files or trusted pickles.

Input specs come from the user (``--input``), from a few sample rows (``--sample``: a DataFrame gives
one input per column, as skl2onnx expects), or from the estimator's ``n_features_in_``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..datafiles import read_npy
from ..errors import InputError, SpecError, UnsafeFormatError, first_line, require
from ..readable import regular_file
from ..runtimes.base import text_values
from ..spec import TensorSpec
from .base import SourceModel

#: Types a .skops file may hold beyond those skops trusts by default (its primitives, containers, numpy
#: arrays, scikit-learn's public estimators), each by its exact name: the helper objects that the estimators
#: edgeml converts are stored with. The estimators themselves come from skl2onnx's converters (``trusted_types``).
SKOPS_HELPER_TYPES = frozenset({
    "numpy.dtype",  # KBinsDiscretizer, SimpleImputer
    "sklearn.tree._tree.Tree",  # decision trees, forests, extra trees, gradient boosting, AdaBoost, bagging
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64", "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64", "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.utils._bunch.Bunch",  # named_estimators_ of voting and stacking ensembles
    "sklearn.multiclass._ConstantPredictor",  # one-vs-rest with a class always or never present
    "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
    "sklearn._loss.loss.HalfTweedieLoss", "sklearn._loss.loss.HalfTweedieLossIdentity",
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
    "sklearn.gaussian_process.kernels.ConstantKernel", "sklearn.gaussian_process.kernels.DotProduct",
    "sklearn.gaussian_process.kernels.ExpSineSquared", "sklearn.gaussian_process.kernels.Product",
    "sklearn.gaussian_process.kernels.RBF", "sklearn.gaussian_process.kernels.RationalQuadratic",
    "sklearn.gaussian_process.kernels.Sum", "sklearn.gaussian_process.kernels.WhiteKernel",
    "sklearn.feature_selection._univariate_selection.chi2",  # score functions of SelectKBest & co.
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.feature_selection._univariate_selection.f_regression",
    "sklearn.feature_selection._mutual_info.mutual_info_classif",
    "sklearn.feature_selection._mutual_info.mutual_info_regression",
    "sklearn.metrics._scorer._PassthroughScorer",  # GridSearchCV with its default scoring
    "sklearn.model_selection._split.KFold", "sklearn.model_selection._split.StratifiedKFold",
})


@functools.lru_cache(maxsize=1)
def trusted_types() -> frozenset[str]:
    """What a .skops file may hold without --trust-pickle, beyond skops' defaults: the scikit-learn
    estimators skl2onnx can convert, and their helper types, by exact name."""
    from sklearn.utils import all_estimators

    skl2onnx = require("skl2onnx", "sklearn")
    converters = set(skl2onnx.supported_converters(from_sklearn=True))
    names = set()
    for _, cls in all_estimators():
        try:
            alias = skl2onnx.get_model_alias(cls)
        except RuntimeError:  # no converter registered for it
            continue
        if alias.startswith("Sklearn") and alias[len("Sklearn"):] in converters:
            names.add(f"{cls.__module__}.{cls.__name__}")
    return frozenset(names) | SKOPS_HELPER_TYPES


def load_skops(path: Path, trust_pickle: bool) -> Any:
    """A .skops file, refused if it holds a type outside ``trusted_types`` (without ``trust_pickle``): skops
    imports and calls whatever a file names once it is trusted, so a name prefix is no guarantee."""
    sio = require("skops.io", "sklearn")
    try:
        untrusted = sio.get_untrusted_types(file=str(path))
    except Exception as exc:  # noqa: BLE001 - a bad archive fails in many ways
        raise _unreadable(path, exc) from exc
    foreign = sorted(set(untrusted) - trusted_types())
    if foreign and not trust_pickle:
        raise UnsafeFormatError(
            f"{path} holds types edgeml does not trust ({', '.join(foreign[:5])}): loading them would import and "
            "run code the file names; pass --trust-pickle (trust_pickle=True) if you made the file or trust its origin"
        )
    try:
        model = sio.load(str(path), trusted=untrusted)
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(path, exc) from exc
    _check_trees(model, path)
    return model


def _unreadable(path: Path, exc: Exception) -> InputError:
    return InputError(f"{path} is not a readable skops file ({first_line(exc)}); save one with skops.io.dump(model, path)")


def _check_trees(model: Any, path: Path) -> None:
    """Trees hold raw node indices that scikit-learn follows without checks: a crafted file could send a
    split back to itself (predict never ends) or outside the tree (a crash). Each split's children must
    come after it inside the tree, and its feature must be one of the model's inputs."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree._tree import Tree

    stack, seen = [(model, np.inf)], set()
    while stack:
        obj, n_features = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tree):
            if not 0 < obj.node_count <= obj.capacity or _bad_splits(obj.children_left, obj.children_right, obj.feature,
                                                                            min(obj.n_features, n_features)):
                raise InputError(f"{path} holds a damaged decision tree (node indices that loop or point outside the tree); save the model again")
        elif isinstance(obj, TreePredictor):
            nodes, leaf = obj.nodes, obj.nodes["is_leaf"].astype(bool)
            left, right = (np.where(leaf, -1, nodes[side].astype(np.int64)) for side in ("left", "right"))
            if _bad_splits(left, right, nodes["feature_idx"], n_features):
                raise InputError(f"{path} holds a damaged gradient-boosting tree (node indices that loop or point outside the tree); save the model again")
        elif isinstance(obj, dict):
            stack.extend((v, n_features) for v in obj.values())
        elif isinstance(obj, (list, tuple)) or (isinstance(obj, np.ndarray) and obj.dtype == object):
            stack.extend((v, n_features) for v in (obj.ravel() if isinstance(obj, np.ndarray) else obj))
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            n_features = getattr(obj, "n_features_in_", n_features)
            stack.extend((v, n_features) for v in vars(obj).values())


def _bad_splits(left: np.ndarray, right: np.ndarray, feature: np.ndarray, n_features) -> bool:
    """Leaves have both children -1; a split's children come after it, inside the arrays."""
    split = left != -1
    index = np.arange(len(left))[split]
    n = len(left)
    return bool(np.any(split != (right != -1))
                or np.any((left[split] <= index) | (left[split] >= n) | (right[split] <= index) | (right[split] >= n))
                or np.any((feature[split] < 0) | (feature[split] >= n_features)))


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
    """A few rows: ``.csv`` (a DataFrame, keeping text columns) or ``.npy`` (a 2-D array, never a pickle)."""
    path = regular_file(path, "sample file")
    if path.suffix.lower() == ".csv":
        pd = require("pandas", "sklearn")
        try:
            return pd.read_csv(path)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot read {path} as CSV ({first_line(exc)})") from exc
    if path.suffix.lower() == ".npy":
        array = read_npy(path)
        if array.dtype.kind not in "biuf":
            raise InputError(f"{path} holds {array.dtype} values; a sample holds numbers (rows x features)")
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
