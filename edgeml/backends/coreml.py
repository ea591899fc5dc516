"""CoreML packages (``.mlpackage`` folders): built from the PyTorch source by coremltools (an edge from
``torch``, not from ONNX), run by CoreML on macOS only. Elsewhere they are inspected and verified from their
spec, and their check is structural (the pipeline says so in the manifest: never ``passed``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import BackendMissing, InputError
from . import Backend, Edge, register

PRECISIONS = ("fp16", "fp32")
#: Deployment targets mlprogram supports, oldest first; the default is the oldest.
MIN_TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")
#: ``compress`` values: weight-only int8 per output channel, int4 per block of 32 input channels, N-bit
#: palettization (k-means), and W8A8 (int8 weights and activations, calibrated on ``calib``), with the oldest
#: target each needs (the ops that hold its weights or quantize activations).
COMPRESSIONS = {"int8": "iOS16", "int4": "iOS18", "palettize4": "iOS16", "palettize6": "iOS16",
                "palettize8": "iOS16", "w8a8": "iOS17"}
DEFAULT_OPTIONS = {"precision": "fp16", "min_target": "iOS16", "compute_units": "ALL", "compress": None,
                   "calib": None, "shapes": None, "image": None, "uncompressed": None}


def check_options(options: dict) -> dict:
    """The CoreML options with their defaults, each checked before anything is exported.

    ``compress``: one of COMPRESSIONS (None: float weights); ``calib``: W8A8's calibration inputs, {input:
    array} batches (one mapping, or an iterable of them such as a ``datafiles.CalibrationSource``); ``shapes``:
    enumerated shapes for the flexible inputs instead of ranges, ``{dim name: sizes}`` or ``{input name:
    shapes}``, sizes as ``[1, 4, 8]`` or ``"1,4,8"``, shapes as ``[(1, 3, 224, 224), ...]`` or
    ``"1x3x224x224,1x3x160x160"`` (``converters.torch_coreml.enumerations`` reads them against the inputs);
    ``image``: the image input's preprocessing, a ``datafiles.ImageOptions`` or a dict of its fields (scale,
    mean, std), which makes that input a Core ML image (``converters.torch_coreml.image_inputs``);
    ``uncompressed``: set by ``pipeline.convert``, the float package it built with these options ({path,
    record}), which a weight-only compression compresses instead of converting the source again."""
    merged = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    unknown = sorted(set(merged) - set(DEFAULT_OPTIONS))
    if unknown:
        raise InputError(f"unknown CoreML option(s) {', '.join(unknown)}; CoreML takes {', '.join(DEFAULT_OPTIONS)}")
    if merged["precision"] not in PRECISIONS:
        raise InputError(f"--precision {merged['precision']!r} is not one of {', '.join(PRECISIONS)}")
    if merged["min_target"] not in MIN_TARGETS:
        raise InputError(f"--min-target {merged['min_target']!r} is not one of {', '.join(MIN_TARGETS)} "
                         "(mlprogram packages need iOS16/macOS13 or later)")
    from ..runtimes.coreml import COMPUTE_UNITS, TWINS, spec_version

    if merged["compute_units"] not in COMPUTE_UNITS:
        raise InputError(f"CoreML compute_units {merged['compute_units']!r} is not one of {', '.join(COMPUTE_UNITS)}")
    compress = merged["compress"]
    if compress is not None:
        if compress not in COMPRESSIONS:
            raise InputError(f"CoreML compression {compress!r} is not one of {', '.join(COMPRESSIONS)}")
        needed = COMPRESSIONS[compress]
        if spec_version(merged["min_target"]) < spec_version(needed):
            twin = next((mac for mac, ios in TWINS.items() if ios == needed), needed)
            raise InputError(f"{compress} CoreML packages need iOS {needed[3:]}/macOS {twin[5:]} or later (the ops that "
                             f"hold them), and --min-target is {merged['min_target']}; give --min-target {needed} "
                             f"(or {twin})")
        if compress.startswith("palettize") and importlib.util.find_spec("sklearn") is None:
            raise BackendMissing(f"{compress} clusters weights with scikit-learn's k-means, which is not installed: "
                                 "pip install scikit-learn (or compress with int8)")
    if merged["image"] is not None:
        merged["image"] = _image_options(merged["image"])
    if (compress == "w8a8") != (merged["calib"] is not None):
        raise InputError("w8a8 calibrates activations on real inputs: give calibration data (--calib DATA)"
                         if compress == "w8a8" else
                         "calibration data applies to w8a8 CoreML compression only (int8 activations); drop it, or "
                         "compress with w8a8")
    return merged


def _image_options(image):
    """``image`` as ``ImageOptions``, checked: Core ML images are channels first, at the input's own size."""
    from ..datafiles import ImageOptions

    if isinstance(image, dict):
        unknown = sorted(set(image) - {"resize", "mean", "std", "layout", "scale"})
        if unknown:
            raise InputError(f"unknown CoreML image option(s) {', '.join(unknown)}; it takes scale, mean and std")
        image = ImageOptions(**image)
    if not isinstance(image, ImageOptions):
        raise InputError(f"the CoreML image option is an ImageOptions or a dict (scale, mean, std), not "
                         f"{type(image).__name__}")
    if image.layout != "NCHW":
        raise InputError("Core ML image inputs are channels first (NCHW): an NHWC model cannot take them; drop "
                         "--layout NHWC and the image options (a tensor input), or export the model channels first")
    if image.resize is not None:
        raise InputError("Core ML takes images at the input's own size (the app, or Vision, scales them): drop "
                         "resize from the CoreML image option")
    return image


def _runtime(path, device: str = "cpu", threads: int | None = None, **options):
    """``options``: ``compute_units`` (``runtimes.coreml.COMPUTE_UNITS``), which wins over ``device``."""
    from ..runtimes.coreml import CoreMLRuntime

    unknown = sorted(set(options) - {"compute_units"})
    if unknown:
        raise InputError(f"unknown CoreML runtime option(s) {', '.join(unknown)}; CoreML takes compute_units")
    return CoreMLRuntime(path, device=device, threads=threads, **options)


def _inspect(path) -> dict:
    """The package as ``edgeml inspect`` shows any artifact, plus what only CoreML has: its weights by how they
    are stored (``weights``), the compression that gives (``compression``), the deployment target its spec
    version needs, each enumerated input's shapes (``enumerated_shapes``), and each image input's color layout
    and preprocessing (``image_inputs``: the app passes it pixels; ``inputs`` shows it as uint8 (1, C, H, W))."""
    from ..inspection import summary

    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise InputError(f"{path} is not a CoreML package (no Manifest.json); convert one with --to coreml")
    from ..runtimes.coreml import (compression_of, describe, enumerated_shapes, feature_type, image_inputs,
                                   program_contents, target_of)
    from ..runtimes.coreml_classic import inspect_classic, is_classic

    inputs, outputs, metadata, spec = describe(path)
    if is_classic(spec):
        return inspect_classic(path, inputs, outputs, metadata, spec)
    main = spec.mlProgram.functions["main"]
    ops, weights = program_contents(spec)
    info = summary(path, inputs, outputs, ops, weights, ir_version=spec.specificationVersion,
                   opsets={"mlprogram": main.opset}, producer=metadata.get("com.github.apple.coremltools.source", ""),
                   metadata=metadata)
    compression = compression_of(ops, weights)
    enumerated = {f.name: enumerated_shapes(feature_type(f)) for f in spec.description.input}
    return {**info, "quantized": compression is not None, "compression": compression,
            "weights": dict(weights.most_common()), "deployment_target": target_of(spec.specificationVersion),
            "enumerated_shapes": {name: shapes for name, shapes in enumerated.items() if shapes},
            "image_inputs": image_inputs(spec)}


def _requires(specs, options: dict) -> None:
    """An image input asked for must be one the model has (``converters.torch_coreml.image_inputs``)."""
    if options.get("image") is not None:
        from ..converters.torch_coreml import image_inputs

        image_inputs(specs, options["image"])


def _build(source, out: Path, options: dict) -> dict:
    from ..converters.torch_coreml import torch_to_coreml

    return torch_to_coreml(source, out, options)


def _sklearn_options(options: dict) -> dict:
    from ..converters.sklearn_coreml import check_options as sklearn_options

    return sklearn_options(options)


def _build_from_sklearn(source, out: Path, options: dict) -> dict:
    from ..converters.sklearn_coreml import sklearn_to_coreml

    return sklearn_to_coreml(source, out, options)


register(Backend("coreml", ".mlpackage", "CoreML package (.mlpackage) for iOS/macOS apps (predicts on macOS only)",
                 _runtime, _inspect, tools=("coremltools",), folder=True),
         Edge("torch", "coreml", description="coremltools from the torch.export program", options=check_options,
              build_source=_build, requires=_requires),
         Edge("sklearn", "coreml", description="coremltools' scikit-learn converter (scikit-learn <= 1.5.1)",
              options=_sklearn_options, build_source=_build_from_sklearn))
