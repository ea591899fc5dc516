"""``edgeml.convert``: source model -> ONNX -> optimized ONNX, checked against the source, with a manifest.

Each artifact is written under a temporary name, checked, and only then renamed into place and listed
in the manifest (``manifest.install``): a failed check or an interrupted run leaves nothing that looks
like a finished artifact, and a manifest that lists only files present with their listed sha256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .data import random_feeds, read_feeds
from .errors import CheckFailed, ExportError, InputError, first_line, no_such_file
from .files import check_target, sha256, temp_path
from .inspection import inspect_model
from .manifest import MANIFEST_NAME, install, manifest_entry, read_manifest, remove_artifact
from .sources import load_source
from .sources.base import SourceModel
from .validate import SKLEARN_ROW_ALLOWANCE, CheckResult, check_tolerances, compare

TARGETS = ("onnx",)
#: Samples generated for the check when no --data is given.
CHECK_SAMPLES = 16
_PROTOBUF_LIMIT = 2**31 - 1


@dataclass
class Artifact:
    path: Path
    target: str
    check: CheckResult | None
    record: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # what ``edgeml inspect`` says of it

    @property
    def precision(self) -> str:
        return self.info.get("precision", "?")


@dataclass
class ConvertResult:
    source: SourceModel
    artifacts: list[Artifact]
    manifest: Path

    @property
    def onnx(self) -> Path:
        return next(a.path for a in self.artifacts if a.target == "onnx")


def parse_targets(to: str | list[str]) -> list[str]:
    targets = [t.strip().lower() for t in (to.split(",") if isinstance(to, str) else to) if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise InputError(f"unknown target {', '.join(unknown) or '(none)'}; this edgeml builds: {', '.join(TARGETS)}")
    return targets


def convert(model: Any, to: str | list[str] = "onnx", output_dir: str | Path = "build", *, inputs=None,
            dynamic_batch: bool = False, sample=None, data=None, model_class: str | None = None,
            model_kwargs: dict | str | None = None, trust_pickle: bool = False, optimize: bool = True,
            check: bool = True, atol: float | None = None, rtol: float | None = None, opset: int | None = None,
            name: str | None = None, int8=False, progress: Callable[[str], None] | None = None) -> ConvertResult:
    """Convert ``model`` (an object or a file) to checked artifacts in ``output_dir``.

    ``inputs``: specs like ``"x:1x3x224x224"``; ``sample``: rows (file or DataFrame) giving a scikit-learn
    model's columns; ``data``: a .npy/.npz/.csv of real inputs for the check (else generated, seed 0).
    ``int8``: True for dynamic INT8, or ``Int8Options(calib=...)`` for static INT8 from calibration data;
    writes ``NAME.int8.onnx`` beside the FP32 artifact once it passes the accuracy gate.
    Raises CheckFailed (exit 1) when an artifact does not match its source, unless ``check=False``.
    """
    say = progress or (lambda message: None)
    targets = parse_targets(to)
    check_tolerances(atol, rtol)
    if data is not None and not isinstance(data, Mapping) and ":" not in str(data) and not Path(data).exists():
        raise no_such_file(data, "data file or folder")
    if name is not None and (not name or Path(name).name != name or name.startswith(".")):
        raise InputError(f"--name {name!r} must be a plain file name without folders; use -o for the folder")
    if int8:
        from .calibration.int8 import Int8Options

        int8 = int8 if isinstance(int8, Int8Options) else Int8Options()
        int8.validate()
    output_dir = Path(output_dir)
    read_manifest(output_dir)  # a folder that cannot hold a manifest fails now, not after the export
    source = load_source(model, inputs=inputs, dynamic_batch=dynamic_batch, sample=sample, model_class=model_class,
                         model_kwargs=model_kwargs, trust_pickle=trust_pickle)
    if int8 and source.kind == "sklearn":
        raise InputError("--int8 applies to neural networks: scikit-learn models convert to ai.onnx.ml operators, "
                         "which have no INT8 form; drop --int8")
    say(f"loaded {source.kind} model ({source.format}); inputs: {', '.join(map(str, source.inputs))}")
    for note in source.notes:
        say(note)
    stem = name or (Path(source.path).stem if source.path else "model")
    fp32_final, int8_final = output_dir / f"{stem}.onnx", output_dir / f"{stem}.int8.onnx"
    for final in (fp32_final, int8_final) if int8 else (fp32_final,):
        check_target(final)
    artifacts = []
    if "onnx" in targets:
        artifacts.append(_build_onnx(source, fp32_final, optimize, check, data, atol, rtol, opset, say))
    if int8:
        # Built from the previous FP32 model, the old INT8 file must not outlive a failed rebuild.
        remove_artifact(int8_final)
        artifacts.append(_build_int8(artifacts[0], int8_final, int8, source, say))
    return ConvertResult(source, artifacts, output_dir / MANIFEST_NAME)


def _build_int8(fp32: Artifact, final: Path, options, source: SourceModel, say) -> Artifact:
    """The INT8 step writes its file itself: into a private folder beside ``final``, then installed."""
    from .calibration.int8 import build_int8
    from .spec import TensorSpec

    specs = [TensorSpec.from_dict(spec) for spec in fp32.info["inputs"]]
    with temp_path(final, folder=True) as staging:
        built = staging / final.name
        report = build_int8(fp32.path, built, specs, options, say)
        return _install(Artifact(final, "onnx", None, {"quantization": report}), built, source)


def _build_onnx(source: SourceModel, final: Path, optimize: bool, check: bool, data, atol, rtol, opset, say) -> Artifact:
    from .onnx_graph import align_inputs, opsets

    if source.path and final.resolve() == Path(source.path).resolve():
        raise InputError(f"the output {final} would overwrite the source; pick another output folder (-o) or --name")
    previous = manifest_entry(final)
    if previous and previous.get("source") != source.to_record():
        say(f"replacing {final} (built before from {previous.get('source', {}).get('file') or 'an in-memory model'})")
    proto, record = export_onnx(source, opset)
    say(f"exported with {record['exporter']}" + (f" (dynamo failed: {record['fallback_reason']})" if "fallback_reason" in record else ""))
    if optimize:
        from .converters.onnx_optimize import optimize_onnx

        proto, record["optimizer"] = optimize_onnx(proto)
        opt = record["optimizer"]
        say(f"optimized with onnxslim: {opt['nodes_before']} -> {opt['nodes_after']} nodes" if opt["applied"]
            else f"not optimized: {opt['reason']}; kept the exported graph")
    problems = align_inputs(proto, source.inputs)
    if problems:
        raise ExportError(
            f"{'; '.join(problems)}: the model's code fixes that size (e.g. a reshape to a constant, or a Python int "
            "taken from a shape); make it shape-agnostic, or give the size in --input"
        )
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise ExportError(f"the ONNX model is {proto.ByteSize() / 2**30:.1f} GB, over protobuf's 2 GB; edgeml writes single-file models only")
    import onnx

    record["opset"] = opsets(proto)
    with temp_path(final, folder=True) as staging:
        built = staging / final.name
        onnx.save_model(proto, str(built))
        result = _check(source, built, record, data, atol, rtol, say) if check else None
        if result is not None and not result.passed:
            raise CheckFailed(f"{final.name}: {result.summary()}; nothing written (use --no-check to keep it for debugging)", result)
        if not check:
            say("check skipped (--no-check): the artifact is unverified")
        return _install(Artifact(final, "onnx", result, record), built, source)


def _install(artifact: Artifact, built: Path, source: SourceModel) -> Artifact:
    """Describe the artifact built in its private folder, move it into place and list it in the manifest."""
    artifact.info = {**inspect_model(built), "file": str(artifact.path)}
    install(built, artifact.path, _artifact_record(artifact, source, built))
    return artifact


def _check(source: SourceModel, artifact: Path, record: dict, data, atol, rtol, say) -> CheckResult:
    from .runtimes.onnxrt import OnnxRuntime

    try:
        candidate = OnnxRuntime(artifact)
    except InputError as exc:
        raise ExportError(
            f"onnxruntime cannot load what {record['exporter']} produced ({first_line(exc.__cause__ or exc)}); "
            "the model uses something the exporter or onnxruntime does not support"
        ) from exc
    feeds, origin = check_inputs(source, data)
    if origin.startswith("generated") and source.kind == "sklearn":
        say("checking on generated N(0, 1) inputs: give --sample or --data with real rows for a check that means more")
    allowance = SKLEARN_ROW_ALLOWANCE if source.kind == "sklearn" else 0.0
    with candidate:
        result = compare(source.reference(), candidate, feeds, atol=atol, rtol=rtol, row_allowance=allowance,
                         inputs_from=origin)
    say(result.summary())
    return result


def export_onnx(source: SourceModel, opset: int | None):
    """The converter for this source's framework; an ONNX source passes through as it is."""
    if source.kind == "torch":
        from .converters.torch_onnx import torch_to_onnx

        return torch_to_onnx(source, opset)
    if source.kind == "sklearn":
        from .converters.sklearn_onnx import sklearn_to_onnx

        return sklearn_to_onnx(source, opset)
    if opset is not None:
        raise InputError("--opset applies to exports; an ONNX source keeps its opsets")
    return source.model, {"exporter": "none (ONNX source)"}


def check_inputs(source: SourceModel, data) -> tuple[dict, str]:
    """Inputs for the check: --data, else the --sample rows, else generated from the specs (seed 0).

    Generated inputs number CHECK_SAMPLES rounded up to a multiple of a fixed batch. Given inputs must
    be finite: on NaN or Inf a model computes NaN or Inf, which no comparison can vouch for. NaN is a
    missing value to a scikit-learn model (its imputers fill it), so there only Inf is refused.
    """
    if isinstance(data, Mapping):
        feeds, origin = {k: np.asarray(v) for k, v in data.items()}, "given arrays"
    elif data is not None:
        feeds, origin = read_feeds(data, source.inputs), f"from {data}"
    elif source.sample is not None:
        feeds, origin = source.sample, "--sample rows"
    else:
        fixed = next((s for s in source.inputs if s.shape and isinstance(s.shape[0], int)), None)
        if fixed is not None and fixed.shape[0] < 1:
            raise InputError(f"input {fixed.name!r} has a first dimension of 0 ({fixed}): a model with no rows cannot "
                             "be checked; export it with a batch of at least 1 (or a symbolic one)")
        step = fixed.shape[0] if fixed is not None else 1
        rows = -(-CHECK_SAMPLES // step) * step
        return random_feeds([s.with_batch(rows) for s in source.inputs]), "generated, seed 0"
    for name, values in feeds.items():
        values = np.asarray(values)
        if values.dtype.kind not in "fc":
            continue
        bad = np.isinf(values) if source.kind == "sklearn" else ~np.isfinite(values)
        if bad.any():
            what = "Inf" if source.kind == "sklearn" else "NaN or Inf"
            raise InputError(f"the check's input {name!r} ({origin}) holds {int(bad.sum())} {what} value(s): outputs "
                             "computed from them cannot be compared; give finite data (or --no-check)")
    return feeds, origin


def _artifact_record(artifact: Artifact, source: SourceModel, content: Path) -> dict:
    """The manifest entry of ``artifact``, whose bytes are in ``content`` until it is installed."""
    info = artifact.info
    if "quantization" in artifact.record:
        check = {"status": "passed", "against": "the FP32 artifact", **artifact.record["quantization"]["accuracy"]}
    elif artifact.check is None:
        check = {"status": "unverified", "reason": "--no-check"}
    else:
        check = {"status": "passed" if artifact.check.passed else "failed", **artifact.check.to_dict()}
    return {
        "file": artifact.path.name,
        "target": artifact.target,
        "sha256": sha256(content),
        "size_bytes": info["size_bytes"],
        "precision": info["precision"],
        "inputs": info["inputs"],
        "outputs": info["outputs"],
        "opset": artifact.record.get("opset"),
        "build": {k: v for k, v in artifact.record.items() if k != "opset"},
        "check": check,
        "source": source.to_record(),
    }
