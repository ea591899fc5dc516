"""Classic Core ML models: the kind coremltools' scikit-learn converter writes (pipelines of Core ML's own
scalers, GLMs and tree ensembles), not mlprogram packages. Such a model takes one row per prediction: a
double array of the features; a classifier gives its label and its class probabilities as a dictionary.

edgeml shows them as it shows every model, with a batch dim: the input is ``(batch, features)`` float32, as
the scikit-learn source and its ONNX artifact take it (Core ML gets each row widened to its doubles, exactly),
the probabilities ``(batch, classes)`` float32 in the order of the model's class labels (scikit-learn's
``classes_``), the label ``(batch,)``, a regressor's value ``(batch, 1)`` float32. On macOS a batch is
predicted as a list of rows with coremltools' documented ``MLModel.predict([{input: row}, ...])``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..spec import TensorSpec

#: ArrayFeatureType.ArrayDataType numbers -> the numpy type Core ML takes a row as.
_ROW_TYPES = {65600: np.float64, 65568: np.float32, 131104: np.int32}
#: Core ML spec versions before mlprogram (7: iOS16) -> the oldest iOS that reads them.
CLASSIC_TARGETS = {1: "iOS11", 2: "iOS11.2", 3: "iOS12", 4: "iOS13", 5: "iOS14", 6: "iOS15"}
#: Model types that hold the feature-level models above: they predict row by row. Neural networks do not.
_PIPELINES = ("pipeline", "pipelineClassifier", "pipelineRegressor")


def is_classic(spec) -> bool:
    """Whether a Core ML spec is a classic model rather than an mlprogram."""
    return spec.WhichOneof("Type") != "mlProgram"


def stages(spec) -> list:
    """The models a spec is made of, a pipeline's in order (a single model is its own one stage)."""
    kind = spec.WhichOneof("Type")
    if kind in _PIPELINES:
        return [stage for model in getattr(spec, kind).pipeline.models for stage in stages(model)]
    return [spec]


def class_labels(spec) -> list:
    """A classifier's labels, in the order of its probabilities (scikit-learn's ``classes_``); [] otherwise."""
    last = stages(spec)[-1]
    model = getattr(last, last.WhichOneof("Type"))
    which = model.WhichOneof("ClassLabels") if "ClassLabels" in model.DESCRIPTOR.oneofs_by_name else None
    return list(getattr(model, which).vector) if which else []


def describe_classic(spec, names: dict) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a classic model as edgeml specs, with a batch dim in front (named as the source
    named it, from ``names``: the package's ``edgeml.dim_names``). Raises InputError for what edgeml does not
    read (neural networks, inputs that are not one array per row)."""
    kinds = [stage.WhichOneof("Type") for stage in stages(spec)]
    if any(kind.startswith("neuralNetwork") for kind in kinds):
        raise InputError(f"this Core ML model is a classic neural network ({', '.join(kinds)}); edgeml reads mlprogram "
                         "packages and scikit-learn's classic models: convert the source again with edgeml --to coreml")

    def batch(name: str) -> str:
        given = names.get(name) or []
        return given[0] if given and isinstance(given[0], str) else "batch"

    inputs = []
    for feature in spec.description.input:
        array = feature.type.multiArrayType
        if feature.type.WhichOneof("Type") != "multiArrayType" or len(array.shape) != 1 or array.dataType not in _ROW_TYPES:
            raise InputError(f"Core ML input {feature.name!r} is not an array of numbers per row ({feature.type.WhichOneof('Type')}); "
                             "edgeml reads the classic models it converts from scikit-learn: convert it again with edgeml")
        inputs.append(TensorSpec(feature.name, (batch(feature.name), int(array.shape[0])), "float32"))
    rows = inputs[0].shape[0] if inputs else "batch"
    labels = class_labels(spec)
    outputs = []
    for feature in spec.description.output:
        kind = feature.type.WhichOneof("Type")
        if kind == "dictionaryType":
            outputs.append(TensorSpec(feature.name, (rows, len(labels)), "float32"))
        elif kind in ("int64Type", "stringType"):
            outputs.append(TensorSpec(feature.name, (rows,), "int64" if kind == "int64Type" else "str"))
        elif kind == "doubleType":
            outputs.append(TensorSpec(feature.name, (rows, 1), "float32"))
        elif kind == "multiArrayType" and len(feature.type.multiArrayType.shape) <= 1:
            size = tuple(map(int, feature.type.multiArrayType.shape)) or ("?",)
            outputs.append(TensorSpec(feature.name, (rows, *size), "float32"))
        else:
            raise InputError(f"Core ML output {feature.name!r} is a {kind}, which edgeml does not read; convert the "
                             "model again with edgeml")
    return inputs, outputs


def classic_predictor(model, spec, inputs: list[TensorSpec], outputs: list[TensorSpec]):
    """``feeds -> arrays`` (in ``outputs``' order) for a loaded ``coremltools.models.MLModel`` of ``spec``: each
    batch goes to Core ML as a list of rows, one dict per row (``MLModel.predict`` takes such a list)."""
    labels = class_labels(spec)
    types = {f.name: _ROW_TYPES[f.type.multiArrayType.dataType] for f in spec.description.input}
    kinds = {f.name: f.type.WhichOneof("Type") for f in spec.description.output}

    def predict(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        columns = {s.name: np.asarray(feeds[s.name], dtype=types[s.name]) for s in inputs}
        count = len(next(iter(columns.values())))
        results = model.predict([{name: rows[i] for name, rows in columns.items()} for i in range(count)]) if count else []
        arrays = []
        for spec_out in outputs:
            values = [result[spec_out.name] for result in results]
            kind = kinds[spec_out.name]
            if kind == "dictionaryType":  # {label: probability}, in the order of the class labels
                arrays.append(np.array([[row[label] for label in labels] for row in values], dtype=np.float32)
                              .reshape(count, len(labels)))
            elif kind in ("int64Type", "stringType"):
                arrays.append(np.array(values, dtype=np.int64 if kind == "int64Type" else object))
            else:
                arrays.append(np.array([np.ravel(v) for v in values], dtype=np.float32).reshape(count, -1))
        return arrays

    return predict


def classic_contents(spec) -> tuple[Counter, int]:
    """Its stages by model type (``{"scaler": 1, "glmClassifier": 1}``), and how many numbers it holds
    (weights, offsets, a scaler's shifts and scales, tree nodes' thresholds and values: all doubles)."""
    found = stages(spec)
    kinds = Counter(stage.WhichOneof("Type") for stage in found)
    return kinds, sum(_doubles(getattr(stage, stage.WhichOneof("Type"))) for stage in found)


def _doubles(message) -> int:
    count = 0
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            count += sum(_doubles(item) for item in ([value] if hasattr(value, "ListFields") else value))
        elif field.type == field.TYPE_DOUBLE:
            count += 1 if isinstance(value, float) else len(value)
    return count


def inspect_classic(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], metadata: dict, spec) -> dict:
    """``edgeml inspect``'s description of a classic package: its stages as its "ops", its doubles as its
    parameters, computed in double (fp64), and the oldest iOS its spec version runs on."""
    from ..inspection import summary

    kinds, numbers = classic_contents(spec)
    info = summary(path, inputs, outputs, kinds, Counter({"float64": numbers}), ir_version=spec.specificationVersion,
                   opsets={"classic": spec.specificationVersion},
                   producer=metadata.get("com.github.apple.coremltools.source", ""), metadata=metadata)
    version = spec.specificationVersion
    return {**info, "precision": "fp64", "quantized": False, "compression": None, "weights": {"float64": numbers},
            "deployment_target": CLASSIC_TARGETS.get(version, f"spec version {version}"), "enumerated_shapes": {},
            "classes": class_labels(spec)}
