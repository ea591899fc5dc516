"""``edgeml.convert``: source model -> ONNX -> optimized ONNX, checked against the source, with a manifest.

Each artifact is written under a temporary name, checked, and only then renamed into place and listed
in the manifest (``manifest.install``): a failed check or an interrupted run leaves nothing that looks
like a finished artifact, and a manifest that lists only files present with their listed sha256.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .data import (check_sizes, concrete_specs, declare_ranges, describe_feeds, generated_failure, generated_origin,
                   parse_shapes, random_feeds, read_feeds)
from .datafiles import is_text_file
from . import backends
from .errors import BackendMissing, CheckFailed, ExportError, InputError, first_line, no_such_file
from .files import check_target, sha256, temp_path
from .manifest import MANIFEST_NAME, install, manifest_entry, read_manifest, remove_artifact
from .model_meta import TASKS, ModelMeta, input_meta
from . import sources
from .sources import load_source
from .sources.base import SourceModel
from .spec import batch_symbols, batched, fixed_batch
from .validate import (SKLEARN_ROW_ALLOWANCE, TOLERANCES, CheckResult, Tolerance, attention_mask_input,
                       check_tolerances, compare, judged_as_quantized)

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
    kept: bool = False  # listed before and used as it was (an in-place conversion's start), not written now

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
    """The formats ``--to`` names, each one the backend table has and the export's ONNX leads to."""
    targets = [t.strip().lower() for t in (to.split(",") if isinstance(to, str) else to) if t.strip()]
    if not targets:
        raise InputError(f"no target given; this edgeml builds: {', '.join(backends.BACKENDS)}")
    for target in targets:
        backends.named(target)
    return targets


def convert(model: Any, to: str | list[str] = "onnx", output_dir: str | Path = "build", *, inputs=None,
            dynamic_batch: bool = False, sample=None, data=None, model_class: str | None = None,
            model_kwargs: dict | str | None = None, trust_pickle: bool = False, optimize: bool = True,
            check: bool = True, atol: Tolerance = None, rtol: Tolerance = None, opset: int | None = None,
            name: str | None = None, int8=False, progress: Callable[[str], None] | None = None,
            task: str | None = None, trust_remote_code: bool = False, shapes: Mapping[str, int] | None = None,
            fuse: bool = True, target_options: Mapping[str, dict] | None = None, fp16: bool = False) -> ConvertResult:
    """Convert ``model`` (an object, a file, or a Hugging Face folder) to checked artifacts in ``output_dir``.

    ``inputs``: specs like ``"x:1x3x224x224"``; ``sample``: rows (file or DataFrame) giving a scikit-learn
    model's columns; ``data``: a .npy/.npz/.csv of real inputs for the check (else generated, seed 0), and for
    the INT8 gate when ``int8`` names no eval data. ``int8``: True for dynamic INT8, or
    ``Int8Options(calib=...)`` for static INT8 from calibration data; writes ``NAME.int8.onnx`` beside the FP32
    artifact once it passes the accuracy gate.
    ``task``: what the model does (``model_meta.TASKS``), stored in the artifact; for a Hugging Face folder it
    picks the head (default: from its config). ``trust_remote_code``: let a Hugging Face config's ``auto_map``
    run its own code. ``shapes``: sizes of symbolic dims in generated check inputs, e.g. ``{"sequence": 128}``.
    ``atol``/``rtol``: the check's tolerances, a number, or {output name: number} (the rest at the default).
    ``target_options``: {target: its build options}, e.g. ``{"coreml": {"precision": "fp32"}}``.
    ``fp16``: also write ``NAME.fp16.onnx``, the FP32 artifact with FP16 weights and compute and float32 inputs
    and outputs (``converters.onnx_fp16``), checked against the source with the fp16 tolerances.
    ``fuse``: apply onnxruntime's transformer fusions (Attention, SkipLayerNormalization...) where they match;
    the artifact then needs onnxruntime, not any ONNX runtime.
    Raises CheckFailed (exit 1) when an artifact does not match its source, unless ``check=False``.
    """
    say = progress or (lambda message: None)
    targets = parse_targets(to)
    check_tolerances(atol, rtol)
    if data is not None and not isinstance(data, Mapping) and ":" not in str(data) and not Path(data).exists():
        raise no_such_file(data, "data file or folder")
    if name is not None and (not name or Path(name).name != name or name.startswith(".")):
        raise InputError(f"--name {name!r} must be a plain file name without folders; use -o for the folder")
    if task is not None and task not in TASKS:
        raise InputError(f"unknown --task {task!r}; use one of: {', '.join(TASKS)}")
    shapes = parse_shapes(shapes)
    if int8:
        from .calibration.int8 import Int8Options

        int8 = int8 if isinstance(int8, Int8Options) else Int8Options()
        if data is not None and int8.eval_data is None and not isinstance(data, Mapping):
            int8 = dataclasses.replace(int8, eval_data=data)  # the user's real inputs judge the INT8 model too
        int8.validate()
    output_dir = Path(output_dir)
    read_manifest(output_dir)  # a folder that cannot hold a manifest fails now, not after the export
    source = load_source(model, inputs=inputs, dynamic_batch=dynamic_batch, sample=sample, model_class=model_class,
                         model_kwargs=model_kwargs, trust_pickle=trust_pickle, task=task,
                         trust_remote_code=trust_remote_code)
    if int8 and shapes and int8.shapes is None:
        int8 = dataclasses.replace(int8, shapes=shapes)  # the gate's generated inputs are sized as the check's
    if source.meta is None:
        source.meta = ModelMeta(task=task)
    elif task is not None:
        source.meta.task = task
    source.inputs, source.meta = declare_ranges(source.inputs, source.meta, shapes.ranges)
    check_sizes(source.inputs, shapes, source.meta,
                batch_fix=f"the check runs {CHECK_SAMPLES} generated samples, or the rows of --data")
    for flag, wanted in (("--int8", int8), ("--fp16", fp16)):
        if wanted and sources.framework(source).tabular:
            raise InputError(f"{flag} applies to neural networks: scikit-learn models convert to ai.onnx.ml "
                             f"operators, which have no {flag[2:].upper()} form; drop {flag}")
    say(f"loaded {source.kind} model ({source.format}); inputs: {', '.join(map(str, source.inputs))}")
    for note in source.notes:
        say(note)
    stem = name or (_source_stem(Path(source.path)) if source.path else "model")
    fp32_final, int8_final = output_dir / f"{stem}.onnx", output_dir / f"{stem}.int8.onnx"
    fp16_final = output_dir / f"{stem}.fp16.onnx"
    variants = [final for final, wanted in ((int8_final, int8), (fp16_final, fp16)) if wanted]
    for final in [fp32_final, *variants]:
        check_target(final)
    plans = {t: backends.plan(t, source.kind) for t in dict.fromkeys(targets) if t != "onnx"}
    from_source = [t for t, edges in plans.items() if edges[0].source == source.kind != "onnx"]
    derived = [t for t in plans if t not in from_source]
    options = {t: _target_options(t, plans[t], (target_options or {}).get(t, {})) for t in plans}
    for target, edges in plans.items():  # what a target needs of the inputs is said before the export
        for edge in (edge for edge in edges if edge.requires):
            edge.requires(source.inputs, options[target])
    unknown = sorted(set(target_options or {}) - set(plans))
    if unknown:
        raise InputError(f"options given for {', '.join(unknown)}, which --to does not name; add it to --to or drop them")
    compressed = {t: options[t]["compress"] for t in from_source if options[t].get("compress")}
    if int8 and "onnx" not in targets and not derived and not compressed:
        raise InputError("--int8 makes the ONNX INT8 artifact; add onnx to --to")
    if fp16 and "onnx" not in targets and not derived:
        raise InputError("--fp16 makes the ONNX FP16 artifact; add onnx to --to (CoreML packages are FP16 by default: "
                         "--precision)")
    for target in compressed:
        options[target] = _with_calibration(options[target], source, int8)
        check_target(fp32_final.with_suffix(f".{compressed[target]}{backends.named(target).suffix}"),
                     backends.named(target).folder)
    listed = _listed_parent(source, fp32_final, targets, int8 or fp16)
    if fp16:
        from .converters.onnx_fp16 import converter

        converter()  # a missing onnxconverter-common fails now, not after the export
    for target in derived + from_source:
        for final in [fp32_final, *variants] if target in derived else [fp32_final]:
            check_target(final.with_suffix(backends.named(target).suffix), backends.named(target).folder)
    plain = [t for t in derived if backends.path_to(t)[0].refusal({"fusion": {"applied": True}})]
    if fuse and plain:
        say(f"not fusing for onnxruntime: --to {', '.join(plain)} reads plain ONNX (it fuses on its own)")
    steps = Steps(optimize, fuse and not plain, check, opset, shapes)
    missing: list[BackendMissing] = []  # targets that cannot be built here: said together, at the end

    def from_the_source() -> list[Artifact]:  # after the ONNX ones: a failed ONNX check leaves none of them
        built = []
        for target in from_source:
            # compressed variants of the package about to be rebuilt are of the old source: gone, as old INT8 files
            plain_name = fp32_final.with_suffix(backends.named(target).suffix).name
            for entry in read_manifest(output_dir)["artifacts"]:
                if entry.get("build", {}).get("variant_of") == plain_name:
                    remove_artifact(output_dir / entry["file"])
            plain_options = {**options[target], "compress": None, "calib": None} if target in compressed else options[target]
            built.append(_from_source(target, plans[target][0], source, fp32_final, steps, data, atol, rtol, say,
                                      plain_options))
            if target in compressed:  # given the package just built, which weight-only compression starts from
                plain = built[-1]
                uncompressed = {"path": plain.path, "record": plain.record["conversion"][0]}
                built.append(_from_source(target, plans[target][0], source, fp32_final, steps, data, atol, rtol, say,
                                          {**options[target], "uncompressed": uncompressed}, variant=compressed[target]))
        return built

    if "onnx" not in targets and not derived:
        return ConvertResult(source, from_the_source(), output_dir / MANIFEST_NAME)
    if listed is not None:  # a checked ONNX artifact, the start of targets built on the device that runs them
        fp32, unfused = listed, None
        say(f"building from {fp32.path.name}, checked and listed in {MANIFEST_NAME}: it stays as it is")
    else:
        fp32, unfused = _build_onnx(source, fp32_final, steps, data, atol, rtol, say)  # the other targets start here
    # What was converted from the old ONNX artifacts does not compute the new ones: gone before anything is
    # built from them (a failed rebuild must not leave them listed as checked against the new file).
    # In place, only the targets rebuilt from the listed file go.
    parents = (fp32_final.name, int8_final.name, fp16_final.name) if listed is None else (fp32_final.name,)
    for entry in read_manifest(output_dir)["artifacts"]:
        if entry.get("build", {}).get("built_from") in parents and (listed is None or entry["target"] in derived):
            remove_artifact(output_dir / entry["file"])
    onnx_artifacts = [fp32]
    # Built from the previous FP32 model, old INT8 and FP16 files must not outlive a failed rebuild.
    for final in variants:
        remove_artifact(final)
    if int8:
        onnx_artifacts.append(_build_int8(fp32, int8_final, int8, source, say, unfused))
    if fp16:
        onnx_artifacts.append(_build_fp16(fp32, fp16_final, source, steps, data, say))
    for parent in list(onnx_artifacts):
        for target in derived:
            refused = backends.path_to(target, parent.target)[0].refusal(parent.record)
            if refused:
                say(f"no {target} from {parent.path.name}: {refused}")
                continue
            try:
                onnx_artifacts.append(_derive(parent, target, source, steps, data, say, options[target]))
            except BackendMissing as exc:
                say(f"{target} from {parent.path.name}: {first_line(exc)}")
                missing.append(exc)
    artifacts = onnx_artifacts + from_the_source()
    if missing:
        raise BackendMissing("; ".join(dict.fromkeys(first_line(exc) for exc in missing)))
    return ConvertResult(source, artifacts, output_dir / MANIFEST_NAME)


def _listed_parent(source: SourceModel, final: Path, targets: list[str], variants) -> Artifact | None:
    """The ONNX artifact ``source`` is, when it is converted in place (into its own folder, under its own
    name) for targets built from it, as on the device that builds a TensorRT engine: listed in its folder's
    manifest with the same bytes, it is used as it is. None when the source is not in place; a source in place
    that is not a listed artifact, or asked to be rebuilt, is an error."""
    if not (source.kind == "onnx" and source.path and final.resolve() == Path(source.path).resolve()):
        return None
    fix = "pick another output folder (-o) or --name"
    if "onnx" in targets or variants:
        raise InputError(f"the output {final} would overwrite the source; {fix} (in its own folder a listed artifact "
                         "is only converted on to other targets, e.g. --to tensorrt)")
    entry = manifest_entry(final)
    if entry is None or entry.get("sha256") != sha256(final):
        raise InputError(f"{final} is not an artifact its folder's {MANIFEST_NAME} lists (or it changed since): "
                         f"converting it in place would leave it unchecked; {fix}")
    artifact = Artifact(final, "onnx", None, dict(entry.get("build", {})), kept=True)
    artifact.info = {**backends.inspect(final), "file": str(final)}
    return artifact


def _with_calibration(options: dict, source: SourceModel, int8) -> dict:
    """A from-source target's options with calibration data (a path or function, ``options["calib"]``) read
    into input batches, as INT8 reads it: ``int8``'s image options and sample count when given."""
    from .datafiles import open_source

    calib = options.get("calib")
    if calib is None or not isinstance(calib, (str, Path)) and not callable(calib):
        return options
    image, samples = (int8.image, int8.calib_samples) if int8 else (None, 128)
    return {**options, "calib": open_source(calib, source.inputs, image=image).split(samples, 0)[0]}


def _target_options(target: str, edges: list, given: dict) -> dict:
    """A target's build options, checked (with their defaults) by the edge that takes them."""
    taking = next((edge for edge in edges if edge.options is not None), None)
    if taking is None:
        if given:
            raise InputError(f"--to {target} takes no options; drop {', '.join(given)}")
        return {}
    return taking.options(dict(given))


def _from_source(target: str, edge, source: SourceModel, stem: Path, steps: Steps, data, atol, rtol, say,
                 options: dict, variant: str | None = None) -> Artifact:
    """A target built from the source model itself (CoreML from torch), checked against it: numerically where
    its runtime runs, else on its structure (input and output names, ranks, fixed dims and ranges), which the
    manifest records as ``unverified`` with the reason, never ``passed``. ``variant``: the compression its
    options ask for, which names the artifact (``m.int8.mlpackage``)."""
    backend = backends.named(target)
    final = stem.with_suffix(f".{variant}{backend.suffix}" if variant else backend.suffix)

    def build(staging: Path) -> Built:
        built = staging / final.name
        record = {"built_from": "the source model",
                  **({"variant_of": stem.with_suffix(backend.suffix).name} if variant else {}), "conversion": [
            {"edge": f"{edge.source} -> {edge.target}", **edge.build_source(source, built, options)}]}
        say(f"converted the source to {target}: {backend.description}")
        return Built(built, record)

    def check(built: Built) -> CheckResult | None:
        conversion = built.record["conversion"][0]
        # a package with enumerated shapes takes those only: generated inputs get its default one's sizes
        default = enumerated_sizes(source.inputs, conversion.get("enumerated_shapes"))
        sizes = {**steps.shapes, **default} if default else steps.shapes
        precision = "int8" if variant else options.get("precision", "fp32")
        try:
            result = _check(source, built.path, built.record, data, atol, rtol, sizes, say, runtime=backend.runtime,
                            precision=precision, images=conversion.get("image_inputs"))
            # compressed weights: judged as the INT8 gate judges, where its runtime runs
            return _as_int8_gate(result, source) if variant else result
        except BackendMissing as exc:
            problems = _structure_problems(source, backends.inspect(built.path), conversion["outputs"])
            if problems:
                raise CheckFailed(f"{final.name}: {'; '.join(problems)}; nothing written") from exc
            stored = conversion.get("compression", {}).get("method")
            built.record["unverified"] = (f"{first_line(exc)}; checked here: input names, ranks, fixed dims and "
                                          "ranges, and output names, against the source"
                                          + (f", and weights stored as {stored}" if stored else "")
                                          + "".join(f"; input {name!r} takes {image['color_layout']} images, "
                                                    "normalized in the package as its metadata records"
                                                    for name, image in (conversion.get("image_inputs") or {}).items()))
            say(f"{final.name}: not run here ({first_line(exc)}); its structure matches the source")
            return None

    return _produce(final, target, source, build, check if steps.check else None)


def _as_int8_gate(result: CheckResult, source: SourceModel) -> CheckResult:
    """``result`` judged as the INT8 gate judges by default (``validate.judged_as_quantized``)."""
    from .calibration.int8 import Int8Options

    return judged_as_quantized(result, Int8Options().min_cosine, bool(source.meta and source.meta.is_classifier))


def _structure_problems(source: SourceModel, info: dict, outputs: list[str]) -> list[str]:
    """How an artifact's inputs and outputs differ from the source's (its inputs, and ``outputs``, the output
    names the export found): names, ranks, fixed dims, ranges."""
    from .spec import TensorSpec

    problems = []
    have = [TensorSpec.from_dict(s) for s in info["inputs"]]
    if [s.name for s in have] != [s.name for s in source.inputs]:
        problems.append(f"inputs {[s.name for s in have]}, the source takes {[s.name for s in source.inputs]}")
    for got, want in zip(have, source.inputs):
        same = len(got.shape) == len(want.shape) and all(
            (g == w) if isinstance(w, int) else isinstance(g, str) for g, w in zip(got.shape, want.shape))
        ranges = [(got.ranges.get(g), want.ranges[w]) for g, w in zip(got.shape, want.shape) if w in want.ranges]
        if not same or any(g is None or (g.min, g.max) != (w.min, w.max) for g, w in ranges):
            problems.append(f"input {want.name!r} is {got}, the source takes {want}")
    if [o["name"] for o in info["outputs"]] != outputs:
        problems.append(f"outputs {[o['name'] for o in info['outputs']]}, the source gives {outputs}")
    return problems


@dataclass
class Steps:
    """How the FP32 artifact is made and checked."""

    optimize: bool = True
    fuse: bool = True
    check: bool = True
    opset: int | None = None
    shapes: dict = field(default_factory=dict)


def _source_stem(path: Path) -> str:
    """An artifact's name from its source: a file's stem, a folder's whole name (``all-MiniLM-L6-v2``)."""
    return path.resolve().name if path.is_dir() else path.stem


def _build_int8(fp32: Artifact, final: Path, options, source: SourceModel, say, unfused=None) -> Artifact:
    """The INT8 artifact of ``fp32``; its check is the accuracy gate, which ``build_int8`` runs between its
    rounds (the manifest's check record comes from the gate's verdict, ``_artifact_record``).

    ``unfused``: the FP32 graph before onnxruntime's fusions, when the artifact has them; static INT8 starts
    from it (Q/DQ calibration works on plain ONNX ops). Dynamic INT8 starts from the fused artifact, whose
    Attention ops become QAttention (``quantize.prepare_attention``), and from ``unfused`` when they cannot."""
    from .calibration.int8 import build_int8
    from .spec import TensorSpec

    specs = [TensorSpec.from_dict(spec) for spec in fp32.info["inputs"]]

    def build(staging: Path) -> Built:
        built, start, fallback = staging / final.name, fp32.path, None
        if unfused is not None:
            import onnx

            fallback = staging / "unfused.onnx"
            onnx.save_model(unfused, str(fallback))
            if options.calib is not None:
                start, fallback = fallback, None
        tokenizer = next((fp32.path.parent / name for name in fp32.record.get("companions", ())), None)
        report = build_int8(start, built, specs, options, say, tokenizer, unfused=fallback)
        # The INT8 model reads the FP32 one's tokenizer (its metadata is copied): listed with it, not copied again.
        companions = {name: fp32.path.parent / name for name in fp32.record.get("companions", ())}
        record = {"built_from": fp32.path.name, "quantization": report,
                  **({"companions": sorted(companions)} if companions else {}),
                  **({"parent_unverified": True} if fp32.check is None else {})}
        return Built(built, record, companions)

    return _produce(final, "onnx", source, build)


def _build_fp16(fp32: Artifact, final: Path, source: SourceModel, steps: Steps, data, say) -> Artifact:
    """The FP16 artifact of ``fp32`` (``converters.onnx_fp16``: its rounds judge it against FP32 on generated
    probe inputs), then checked against the source model on the check's inputs with the fp16 tolerances."""
    from .converters.onnx_fp16 import build_fp16
    from .spec import TensorSpec

    specs = [TensorSpec.from_dict(spec) for spec in fp32.info["inputs"]]

    def build(staging: Path) -> Built:
        built = staging / final.name
        record = build_fp16(fp32.path, built, specs, say, sizes=steps.shapes, meta=input_meta(fp32.path),
                            strict=steps.check)
        kept = f", {len(record['kept_fp32'])} node(s) kept in FP32" if record["kept_fp32"] else ""
        say(f"converted {fp32.path.name} to FP16: {record['fp16_weight_share']:.0%} of the weights in FP16{kept}")
        companions = {name: fp32.path.parent / name for name in fp32.record.get("companions", ())}
        for name, companion in companions.items():  # read beside it by the check (sentences: its tokenizer)
            shutil.copyfile(companion, staging / name)
        return Built(built, {"built_from": fp32.path.name, "checked_against": "the source model",
                             "conversion": [{"edge": "onnx -> fp16 onnx", **record}],
                             **({"companions": sorted(companions)} if companions else {})}, companions)

    def check(built: Built) -> CheckResult:
        return _check(source, built.path, built.record, data, None, None, steps.shapes, say, precision="fp16")

    return _produce(final, "onnx", source, build, check if steps.check else None,
                    hint=" (use --no-check to keep it for debugging)")


def _derive(parent: Artifact, target: str, source: SourceModel, steps: Steps, data, say,
            options: dict | None = None) -> Artifact:
    """``parent`` (an ONNX artifact) converted along the backend table's edges to ``target``, written beside it
    (``m.onnx`` -> ``m.ort``, ``m.int8.onnx`` -> ``m.int8.ort``) and checked against it on the check's inputs:
    what it was built from is what it must compute. ``options``: the target's, for the edge that takes them."""
    backend = backends.named(target)
    final = parent.path.with_suffix(backend.suffix)
    edges = backends.path_to(target, parent.target)

    def build(staging: Path) -> Built:
        current, conversion = parent.path, []
        for edge in edges:
            built = staging / f"{final.stem}{backends.named(edge.target).suffix}"
            made = edge.build(current, built, options) if edge.options is not None else edge.build(current, built)
            conversion.append({"edge": f"{edge.source} -> {edge.target}", **made})
            current = built
        say(f"converted {parent.path.name} to {target}: {backend.description}")
        companions = {name: parent.path.parent / name for name in parent.record.get("companions", ())}
        return Built(current, {"built_from": parent.path.name, "conversion": conversion}, companions)

    def check(built: Built) -> CheckResult:
        opener = (len(edges) == 1 and edges[0].reference) or backends.named(parent.target).runtime
        with opener(parent.path) as reference:
            result = _check(source, built.path, built.record, data, None, None, steps.shapes, say, reference=reference,
                            runtime=backend.runtime, precision=parent.precision)
        # INT8 on another runtime (a TensorRT engine's kernels) rounds otherwise: judged as the INT8 gate judges
        return _as_int8_gate(result, source) if parent.precision == "int8" else result

    return _produce(final, target, source, build, check if steps.check else None,
                    failing=f" against {parent.path.name}")


def _build_onnx(source: SourceModel, final: Path, steps: Steps, data, atol, rtol, say):
    """The checked FP32 artifact, and its graph before onnxruntime's fusions when they applied (else None)."""
    from .model_meta import write_meta
    from .onnx_graph import align_inputs, opsets

    if source.path and final.resolve() == Path(source.path).resolve():
        raise InputError(f"the output {final} would overwrite the source; pick another output folder (-o) or --name")
    previous = manifest_entry(final)
    if previous and previous.get("source") != source.to_record():
        say(f"replacing {final} (built before from {previous.get('source', {}).get('file') or 'an in-memory model'})")
    proto, record = sources.framework(source).export(source, steps.opset)
    unfused = None
    say(f"exported with {record['exporter']}" + (f" (dynamo failed: {record['fallback_reason']})" if "fallback_reason" in record else ""))
    if steps.optimize:
        from .converters.onnx_optimize import fuse_for_ort, optimize_onnx

        proto, record["optimizer"] = optimize_onnx(proto)
        opt = record["optimizer"]
        say(f"optimized with onnxslim: {opt['nodes_before']} -> {opt['nodes_after']} nodes" if opt["applied"]
            else f"not optimized: {opt['reason']}; kept the exported graph")
        if steps.fuse and sources.framework(source).fuses:
            unfused = proto
            proto, record["fusion"] = fuse_for_ort(proto)
            if record["fusion"]["applied"]:
                fused = ", ".join(f"{n} {op}" for op, n in record["fusion"]["fused"].items())
                say(f"fused for onnxruntime: {fused} (com.microsoft ops: the artifact needs onnxruntime; --no-fuse "
                    "keeps plain ONNX)")
            elif record["fusion"]["reason"] != "nothing to fuse":
                say(f"not fused: {record['fusion']['reason']}")
    if not record.get("fusion", {}).get("applied"):
        unfused = None
    problems = align_inputs(proto, source.inputs)
    if unfused is not None:
        align_inputs(unfused, source.inputs)
    if problems:
        raise ExportError(
            f"{'; '.join(problems)}: the model's code fixes that size (e.g. a reshape to a constant, or a Python int "
            "taken from a shape); make it shape-agnostic, or give the size in --input"
        )
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise ExportError(f"the ONNX model is {proto.ByteSize() / 2**30:.1f} GB, over protobuf's 2 GB; edgeml writes single-file models only")
    import onnx

    record["opset"] = opsets(proto)
    meta = dataclasses.replace(source.meta)
    def build(staging: Path) -> Built:
        companions = {}
        if source.tokenizer:
            meta.tokenizer = f"{final.name.removesuffix('.onnx')}.tokenizer.json"
            companions[meta.tokenizer] = staging / meta.tokenizer
            shutil.copyfile(source.tokenizer, companions[meta.tokenizer])
            record["companions"] = sorted(companions)
        for graph in [g for g in (proto, unfused) if g is not None]:
            write_meta(graph, meta)
        onnx.save_model(proto, str(staging / final.name))
        return Built(staging / final.name, record, companions)

    fused = " or --no-fuse to build it without onnxruntime's fusions" if record.get("fusion", {}).get("applied") else ""
    artifact = _produce(final, "onnx", source, build,
                        (lambda built: _check(source, built.path, record, data, atol, rtol, steps.shapes, say))
                        if steps.check else None,
                        hint=f" (use --no-check to keep it for debugging{fused})")
    if not steps.check:
        say("check skipped (--no-check): the artifact is unverified")
    return artifact, unfused


@dataclass
class Built:
    """What a step made in its private folder: the artifact (a file or a folder), the record of how, and
    the files it needs beside it (name -> file, in the private folder or already in place)."""

    path: Path
    record: dict
    companions: dict = field(default_factory=dict)


def _produce(final: Path, target: str, source: SourceModel, build: Callable[[Path], Built],
             check: Callable[[Built], CheckResult] | None = None, failing: str = "", hint: str = "") -> Artifact:
    """Every artifact, whatever its kind, is made here: ``build`` writes it into a private folder beside
    ``final``, ``check`` judges it (None: it stays unverified, and the manifest says so; INT8 is judged by its
    gate inside ``build``), and only then is it described, moved into place and listed in the manifest. Any
    failure leaves nothing behind: not the artifact, not the private folder."""
    with temp_path(final, folder=True, final_folder=backends.named(target).folder) as staging:
        built = build(staging)
        result = check(built) if check is not None else None
        if result is not None and not result.passed:
            raise CheckFailed(f"{final.name}: {result.summary()}{failing}; nothing written{hint}", result)
        return _install(Artifact(final, target, result, built.record), built.path, source, built.companions)


def _install(artifact: Artifact, built: Path, source: SourceModel, companions: Mapping[str, Path] | None = None) -> Artifact:
    """Describe the artifact built in its private folder, move it into place and list it in the manifest, with
    the files it needs beside it (``companions``: name -> the file, in the private folder or already in place)."""
    artifact.info = {**backends.inspect(built), "file": str(artifact.path)}
    install(built, artifact.path, _artifact_record(artifact, source, built), companions)
    return artifact


def _check(source: SourceModel, artifact: Path, record: dict, data, atol, rtol, shapes, say, reference=None,
           runtime=None, precision: str = "fp32", images: dict | None = None) -> CheckResult:
    """``artifact`` (opened with ``runtime``, default onnxruntime) against ``reference`` (default the source
    model) on the check's inputs, with ``precision``'s default tolerances. ``images``: the artifact's image
    inputs ({input: ``runtimes.coreml.IMAGE_INPUTS`` entry}), which take pixels: the check feeds it generated
    uint8 pictures, and the source the same pictures normalized as it was trained to take them."""
    from .runtimes.onnxrt import OnnxRuntime

    try:
        candidate = (runtime or OnnxRuntime)(artifact)
    except InputError as exc:
        made_by = record.get("exporter") or (record.get("conversion") or [{}])[-1].get("converter", "the converter")
        raise ExportError(
            f"the runtime cannot load what {made_by} produced ({first_line(exc.__cause__ or exc)}); "
            "the model uses something the converter or the runtime does not support"
        ) from exc
    if images:
        from .runtimes.coreml import PixelReference

        reference = PixelReference(reference or sources.reference(source), images)
        if data is not None:
            say(f"checking {artifact.name} on generated pictures: its image input takes pixels, and --data holds the "
                "source's inputs")
    # What convert wrote, completed from the graph (the tables token ids index): the reference's, an ONNX file,
    # when the candidate was derived from one (an ORT file or an engine has no ONNX graph to read).
    meta = input_meta(reference if reference is not None else candidate)
    text = None
    if is_text_file(data) and not images:  # sentences, tokenized by the artifact's own tokenizer

        text = candidate.text_encoder.sized(shapes)
    feeds, origin = (pixel_feeds(reference.inputs, shapes, meta) if images
                     else check_inputs(source, data, shapes, meta, text))
    tabular = sources.framework(source).tabular
    if origin.startswith("generated") and tabular:
        say("checking on generated N(0, 1) inputs: give --sample or --data with real rows for a check that means more")
    allowance = SKLEARN_ROW_ALLOWANCE if tabular else 0.0
    mask = attention_mask_input(candidate.inputs, meta)
    check_tolerances(atol, rtol, candidate.output_names)  # a wrong output name is the user's, not the inputs'
    with candidate:
        try:
            result = compare(reference or sources.reference(source), candidate, feeds, precision=precision if precision in TOLERANCES else "fp32",
                             atol=atol, rtol=rtol, row_allowance=allowance,
                             inputs_from=origin, mask_input=mask, classifier=meta.is_classifier if meta.task else None)
        except InputError as exc:
            if not origin.startswith("generated"):
                raise
            raise generated_failure(str(source.path or "the model"), source.inputs, meta,
                                    first_line(exc.__cause__ or exc)) from exc
    result.inputs = describe_feeds(feeds, origin)
    say(result.summary())
    return result


def check_inputs(source: SourceModel, data, shapes: Mapping[str, int] | None = None,
                 meta: ModelMeta | None = None, text=None) -> tuple[dict, str]:
    """Inputs for the check: --data, else the --sample rows, else generated from the specs (seed 0), with
    ``shapes`` sizing their symbolic dims and ``meta`` saying what token inputs hold (``data.random_feeds``).
    ``text``: the tokenizer that turns a ``.txt`` --data's sentences into inputs.

    Generated inputs number CHECK_SAMPLES rounded up to a multiple of a fixed batch. Given inputs must
    be finite: on NaN or Inf a model computes NaN or Inf, which no comparison can vouch for. NaN is a
    missing value to a scikit-learn model (its imputers fill it), so there only Inf is refused.
    """
    if isinstance(data, Mapping):
        feeds, origin = {k: np.asarray(v) for k, v in data.items()}, "given arrays"
    elif data is not None:
        feeds, origin = read_feeds(data, source.inputs, text=text), f"from {data}"
    elif source.sample is not None:
        feeds, origin = source.sample, "--sample rows"
    else:
        step = fixed_batch(source.inputs)
        if step == 0:
            empty = next(s for s in source.inputs if s.shape)
            raise InputError(f"input {empty.name!r} has a first dimension of 0 ({empty}): a model with no rows cannot "
                             "be checked; export it with a batch of at least 1 (or a symbolic one)")
        step = step or 1
        rows = -(-CHECK_SAMPLES // step) * step
        shapes = shapes or {}
        specs = batched(source.inputs, rows)
        return random_feeds(specs, sizes=shapes, meta=meta), generated_origin(specs, 0, meta, shapes)
    tabular = sources.framework(source).tabular
    for name, values in feeds.items():
        values = np.asarray(values)
        if values.dtype.kind not in "fc":
            continue
        bad = np.isinf(values) if tabular else ~np.isfinite(values)
        if bad.any():
            what = "Inf" if tabular else "NaN or Inf"
            raise InputError(f"the check's input {name!r} ({origin}) holds {int(bad.sum())} {what} value(s): outputs "
                             "computed from them cannot be compared; give finite data (or --no-check)")
    return feeds, origin


def enumerated_sizes(specs, enumerated: Mapping | None) -> dict[str, int]:
    """The sizes of the inputs' symbolic dims (not the batch, which the check sets) in a package's default
    enumerated shape, the first of ``enumerated`` ({input: [shape, ...]}, the conversion record's)."""
    batch = batch_symbols(specs)
    return {dim: int(enumerated[spec.name][0][axis]) for spec in specs if spec.name in (enumerated or {})
            for axis, dim in enumerate(spec.shape) if isinstance(dim, str) and axis and dim not in batch}


def pixel_feeds(specs, shapes: Mapping[str, int], meta: ModelMeta | None = None) -> tuple[dict, str]:
    """CHECK_SAMPLES generated pictures (seed 0) for inputs that take pixels (uint8: every value 0..255, not
    the 0 and 1 of ``random_feeds``' integers); other inputs as ``random_feeds`` makes them."""
    specs = batched(specs, CHECK_SAMPLES)
    feeds = random_feeds(specs, sizes=shapes, meta=meta)
    rng = np.random.default_rng(0)
    for spec in concrete_specs(specs, sizes=shapes, meta=meta):
        if spec.dtype == "uint8":
            feeds[spec.name] = rng.integers(0, 256, size=spec.concrete_shape(), dtype=np.uint8)
    return feeds, f"{generated_origin(specs, 0, meta, shapes)}, pictures uniform in 0..255"


def _artifact_record(artifact: Artifact, source: SourceModel, content: Path) -> dict:
    """The manifest entry of ``artifact``, whose bytes are in ``content`` until it is installed."""
    info = artifact.info
    meta = ModelMeta.from_props(info.get("metadata", {}))
    if "quantization" in artifact.record:
        check = {"status": "passed", "against": "the FP32 artifact", **artifact.record["quantization"]["accuracy"]}
        if artifact.record.get("parent_unverified"):
            check.update(status="unverified", reason="judged against the FP32 artifact, which was built with --no-check")
    elif artifact.check is None:
        check = {"status": "unverified", "reason": artifact.record.get("unverified", "--no-check")}
    else:
        check = {"status": "passed" if artifact.check.passed else "failed",
                 "against": artifact.record.get("checked_against") or artifact.record.get("built_from", "the source model"),
                 **artifact.check.to_dict()}
    return {
        "file": artifact.path.name,
        "target": artifact.target,
        "sha256": sha256(content),
        "size_bytes": info["size_bytes"],
        "precision": info["precision"],
        "inputs": info["inputs"],
        "outputs": info["outputs"],
        "opset": artifact.record.get("opset"),
        "build": {k: v for k, v in artifact.record.items()
                  if k not in ("opset", "unverified", "parent_unverified", "checked_against")},
        "check": check,
        "source": source.to_record(),
        **{key: value for key, value in (("task", meta.task), ("labels", meta.labels)) if value},
    }
