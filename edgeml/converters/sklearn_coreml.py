"""scikit-learn -> CoreML with coremltools' scikit-learn converter, which exists only beside scikit-learn
<= 1.5.1 (coremltools disables it above; then the edge stops with exit 3 and points to the ONNX target).

It writes a classic Core ML model (``runtimes.coreml_classic``: Core ML's own scalers, GLMs and tree
ensembles, one row per prediction, computing in double) saved as an ``.mlpackage``, with the source's input
name and the output names of edgeml's scikit-learn artifacts (``label`` and ``probabilities``, or
``variable``), so that its structure can be checked against the source where Core ML cannot predict."""

from __future__ import annotations

import copy
from pathlib import Path

from ..errors import BackendMissing, CheckFailed, ExportError, InputError, first_line, require
from ..quiet import quiet
from ..runtimes.base import LABEL_OUTPUT_KEY, PROBA_OUTPUT_KEY
from ..runtimes.coreml import COMPUTE_UNITS, SPEC_VERSIONS, TWINS, coremltools, package_metadata, spec_version
from ..runtimes.coreml_classic import CLASSIC_TARGETS, stages
from ..runtimes.sklearn import is_classifier, output_specs
from ..sources.base import SourceModel

#: What a classic package cannot honour, and why (the CoreML options that only mlprogram packages take).
_MLPROGRAM_ONLY = {
    "precision": "a scikit-learn model's Core ML package computes in double (its GLMs, trees and scalers have no "
                 "FP16 or FP32 form): drop --precision",
    "compress": "a scikit-learn model's Core ML package has no mlprogram weights to compress: drop --int4/--palettize "
                "(or ship --to onnx)",
    "calib": "a scikit-learn model's Core ML package has no activations to calibrate: drop --calib for coreml",
    "shapes": "a scikit-learn model's Core ML package takes one row per prediction, so it has no shapes to "
              "enumerate: drop --enumerate",
    "image": "a scikit-learn model's Core ML package takes numbers, not images: drop --mean, --std and --scale",
}


def check_options(options: dict) -> dict:
    """The CoreML options of a scikit-learn model (``backends.coreml.check_options``' keys): ``min_target`` and
    ``compute_units`` as there; the rest only mlprogram packages take, refused when given. ``precision`` comes
    back as "fp32", the tolerances a check on macOS judges the package with (it computes finer, in double)."""
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - {"min_target", "compute_units", *_MLPROGRAM_ONLY})
    if unknown:
        raise InputError(f"unknown CoreML option(s) {', '.join(unknown)}; a scikit-learn model's CoreML package takes "
                         "min_target and compute_units")
    for key, why in _MLPROGRAM_ONLY.items():
        if key in given:
            raise InputError(why)
    merged = {"precision": "fp32", "min_target": "iOS16", "compute_units": "ALL", "compress": None, "calib": None,
              "shapes": None, **given}
    targets = (*SPEC_VERSIONS, *TWINS)
    if merged["min_target"] not in targets:
        raise InputError(f"--min-target {merged['min_target']!r} is not one of {', '.join(targets)}")
    if merged["compute_units"] not in COMPUTE_UNITS:
        raise InputError(f"CoreML compute_units {merged['compute_units']!r} is not one of {', '.join(COMPUTE_UNITS)}")
    return merged


def sklearn_to_coreml(source: SourceModel, out: Path, options: dict) -> dict:
    """Write ``source`` as a classic Core ML package at ``out`` (``options``: ``check_options``'); returns the
    record of how. Exit 3 when coremltools' converter is off for this scikit-learn version; ExportError for an
    estimator it has no Core ML form for."""
    ct = coremltools()
    sklearn = require("sklearn", "sklearn")
    from coremltools import _deps

    if not _deps._HAS_SKLEARN:
        raise BackendMissing(
            f"coremltools {ct.__version__} converts scikit-learn models only beside scikit-learn "
            f"{_deps._SKLEARN_MIN_VERSION} to {_deps._SKLEARN_MAX_VERSION}, and this is {sklearn.__version__}: "
            "ship --to onnx (onnxruntime's mobile build runs it on iOS), or --to ort")
    what = type(source.model).__name__
    if source.columns or len(source.inputs) != 1 or source.inputs[0].dtype == "str":
        raise ExportError(f"coremltools converts a scikit-learn model that takes one array of numbers, and this "
                          f"{what} takes {', '.join(map(str, source.inputs))}: ship --to onnx")
    model, notes = _coreml_ready(ct, source.model)
    outputs = [spec.name for spec in output_specs(source.model)]
    try:
        with quiet():  # it prints for its own developers
            package = ct.converters.sklearn.convert(model, source.inputs[0].name,
                                                    outputs if is_classifier(source.model) else outputs[0])
    except Exception as exc:  # noqa: BLE001 - its converters fail in many ways (numpy 2 breaks gradient boosting)
        raise ExportError(f"coremltools {ct.__version__} cannot convert {what} ({type(exc).__name__}: "
                          f"{first_line(exc)}); ship --to onnx") from exc
    spec = package.get_spec()
    if spec.specificationVersion > spec_version(options["min_target"]):
        raise CheckFailed(f"{out.name}: its spec version {spec.specificationVersion} is newer than "
                          f"{options['min_target']} reads ({spec_version(options['min_target'])}); nothing written")
    labelled = {LABEL_OUTPUT_KEY: outputs[0], PROBA_OUTPUT_KEY: outputs[1]} if is_classifier(source.model) else {}
    package.user_defined_metadata.update(package_metadata(source, **labelled))
    package.save(str(out))
    return {"converter": "coremltools", "version": ct.__version__, "sklearn": sklearn.__version__, "format": "classic",
            "model_type": spec.WhichOneof("Type"), "stages": [s.WhichOneof("Type") for s in stages(spec)],
            "specification_version": spec.specificationVersion, "precision": "fp64",
            # the oldest OS that reads it, which every --min-target an mlprogram can have is newer than
            "minimum_deployment_target": CLASSIC_TARGETS.get(spec.specificationVersion, options["min_target"]),
            "compute_units": options["compute_units"],
            "outputs": outputs, **({"notes": notes} if notes else {})}


def _coreml_ready(ct, model) -> tuple:
    """The model as coremltools takes it, and what was changed: its estimators must each have a Core ML form,
    and its LogisticRegressions must be one-vs-rest (Core ML's GLM classifier has no softmax), which a binary one
    computes whatever ``multi_class`` says: that copy is marked "ovr", the same arithmetic."""
    from coremltools.converters.sklearn._converter_internal import _converter_lookup
    from sklearn.linear_model import LogisticRegression

    steps = [step for _, step in model.steps] if hasattr(model, "steps") else [model]
    foreign = [type(step).__name__ for step in steps if type(step) not in _converter_lookup]
    if foreign:
        known = ", ".join(sorted(cls.__name__ for cls in _converter_lookup))
        raise ExportError(f"coremltools has no Core ML form for {', '.join(foreign)} (it converts {known}, and "
                          "Pipelines of them): ship --to onnx")
    notes = []
    ready = copy.deepcopy(model)
    ready_steps = [step for _, step in ready.steps] if hasattr(ready, "steps") else [ready]
    for step in ready_steps:
        if not isinstance(step, LogisticRegression) or step.multi_class == "ovr":
            continue
        if len(step.classes_) > 2 and (step.multi_class == "multinomial" or step.solver != "liblinear"):
            raise ExportError(f"this LogisticRegression of {len(step.classes_)} classes is multinomial (a softmax), which "
                              "Core ML's GLM classifier cannot compute: fit it with multi_class='ovr', or ship --to onnx")
        if step.multi_class == "multinomial":
            raise ExportError("this binary LogisticRegression is multinomial (a softmax of two scores), which Core ML's "
                              "GLM classifier cannot compute: fit it with multi_class='ovr', or ship --to onnx")
        step.multi_class = "ovr"
        notes.append("its LogisticRegression computes one-vs-rest (binary, or liblinear): converted as multi_class='ovr'")
    return ready, notes
