"""scikit-learn -> ONNX with skl2onnx: labels and a probability matrix (no ZipMap) for classifiers."""

from __future__ import annotations

import copy

import numpy as np

from ..errors import ExportError, first_line, require
from ..runtimes.base import LABEL_OUTPUT_KEY, PROBA_OUTPUT_KEY
from ..runtimes.sklearn import is_classifier
from ..onnx_graph import set_metadata
from ..sources.base import SourceModel
from ..sources.sklearn_source import walk_estimators


def sklearn_to_onnx(source: SourceModel, opset: int | None = None):
    """Convert ``source`` (sklearn); returns ``(ModelProto, record)``."""
    skl2onnx = require("skl2onnx", "sklearn")
    from skl2onnx.common import data_types

    types = {"float32": data_types.FloatTensorType, "float64": data_types.DoubleTensorType,
             "int64": data_types.Int64TensorType, "str": data_types.StringTensorType}
    # Tree ensembles on float inputs run in double inside the graph, as scikit-learn compares float32
    # features with float64 thresholds and sums votes in float64: float32 sums break 50/50 ties otherwise.
    in_double = (not source.columns and _has_trees(source.model)
                 and all(spec.dtype == "float32" for spec in source.inputs))
    initial_types = []
    for spec in source.inputs:
        if spec.dtype not in types:
            raise ExportError(f"input {spec.name!r} has dtype {spec.dtype}; scikit-learn inputs can be {', '.join(types)}")
        dtype = "float64" if in_double else spec.dtype
        initial_types.append((spec.name, types[dtype]([None, *spec.shape[1:]])))
    classifier = is_classifier(source.model)
    model = onnx_ready(source.model)
    target = {"": opset or skl2onnx.get_latest_tested_opset_version(), "ai.onnx.ml": 3} if in_double else opset
    try:
        proto = skl2onnx.convert_sklearn(model, initial_types=initial_types, target_opset=target,
                                         options=converter_options(model))
    except Exception as exc:  # noqa: BLE001 - skl2onnx signals unsupported models with many error types
        message = first_line(exc)
        if type(exc).__name__ in ("MissingShapeCalculator", "MissingConverter"):
            message += "; skl2onnx has no converter for it: register one with skl2onnx.update_registered_converter"
        raise ExportError(f"skl2onnx cannot convert {type(source.model).__name__}: {message}") from exc
    if in_double:
        cast_inputs_to_double(proto)
    if classifier:
        names = [o.name for o in proto.graph.output]
        set_metadata(proto, {LABEL_OUTPUT_KEY: names[0], PROBA_OUTPUT_KEY: names[1]})
    import sklearn

    return proto, {"exporter": "skl2onnx", "skl2onnx": skl2onnx.__version__, "sklearn": sklearn.__version__}


def _has_trees(model) -> bool:
    """Random forests, extra trees and single trees: where skl2onnx's double path is sound (its gradient
    boosting converter declares float outputs for double trees, which onnxruntime rejects)."""
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
    from sklearn.tree import BaseDecisionTree

    kinds = (BaseDecisionTree, RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor)
    return any(isinstance(est, kinds) for est in walk_estimators(model))


def cast_inputs_to_double(proto) -> None:
    """Keep the graph's inputs float32 for callers and cast them to double as the first node."""
    from onnx import TensorProto, helper

    casts = []
    for value in proto.graph.input:
        inner = f"{value.name}_as_double"
        for node in proto.graph.node:
            node.input[:] = [inner if name == value.name else name for name in node.input]
        casts.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.DOUBLE, name=f"{value.name}_to_double"))
        value.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes = [*casts, *proto.graph.node]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def converter_options(model) -> dict:
    """No ZipMap for classifiers (labels + a probability matrix); scalers divide in double and cast back,
    as scikit-learn does, so that features on large scales meet tree thresholds exactly as in the source."""
    from sklearn.preprocessing import StandardScaler

    options = {id(est): {"div": "div_cast"} for est in walk_estimators(model) if isinstance(est, StandardScaler)}
    if is_classifier(model):
        options[id(model)] = {"zipmap": False}
    return options


def onnx_ready(model):
    """A copy whose SimpleImputers on text columns mark missing values as '' (skl2onnx cannot match NaN in strings).

    edgeml feeds a missing text value as '' (runtimes do this for DataFrames), so the imputer still fills it.
    """
    from sklearn.impute import SimpleImputer

    patched = copy.deepcopy(model)
    for est in walk_estimators(patched):
        if isinstance(est, SimpleImputer) and getattr(est, "statistics_", np.array([])).dtype == object:
            if not isinstance(est.missing_values, str):
                est.missing_values = ""
    return patched

