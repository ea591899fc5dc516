"""Core ML runtime: a ``.mlpackage`` predicted by coremltools, which can only on macOS. Written against
coremltools' documented ``MLModel(path, compute_units=...)`` / ``predict`` API; CI (Linux) cannot run it,
so elsewhere it refuses at once with where it runs (exit 3)."""

from __future__ import annotations

import json
import platform
import sys
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from ..errors import BackendMissing, InputError, first_line, require
from ..files import folder_entries
from ..quiet import quiet
from ..spec import DimRange, TensorSpec
from .base import Runtime
from .coreml_classic import classic_predictor, describe_classic, is_classic


def coremltools():
    """coremltools, imported quietly: at import it warns about untested torch and scikit-learn versions and
    about native libraries only macOS has, none of which bears on converting or inspecting."""
    with quiet():
        return require("coremltools", "coreml")


#: Package metadata key of the source inputs' dim names ({input: [name or None per axis]}): a CoreML spec keeps
#: each dim's range but not its name.
DIM_NAMES = "edgeml.dim_names"
#: Package metadata key of the image inputs' preprocessing ({input: ``converters.torch_coreml.image_inputs``'
#: record: color_layout, scale, mean, std, coreml_scale, coreml_bias, std_in_program}): what the app's pixels go
#: through, and what the check repeats to give the source the same inputs.
IMAGE_INPUTS = "edgeml.image_inputs"
#: Core ML's compute units (coremltools' ``ComputeUnit`` names).
COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")
#: ArrayFeatureType.ArrayDataType numbers -> edgeml dtypes.
_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}
#: ImageFeatureType.ColorSpace numbers -> (name, channels); an image input is described as uint8 (1, C, H, W).
_COLOR_SPACES = {10: ("GRAYSCALE", 1), 20: ("RGB", 3), 30: ("BGR", 3), 40: ("GRAYSCALE_FLOAT16", 1)}


class CoreMLRuntime(Runtime):
    backend = "coreml"
    tools = ("coremltools",)

    def __init__(self, path, device: str = "cpu", threads: int | None = None, compute_units: str | None = None):
        """``device``: "cpu" runs on the CPU only (CPU_ONLY); anything else lets Core ML pick the GPU and the
        Neural Engine too (ALL). ``compute_units``: one of COMPUTE_UNITS, instead of what ``device`` says."""
        path = Path(path)
        if compute_units is not None and compute_units not in COMPUTE_UNITS:
            raise InputError(f"compute_units {compute_units!r} is not one of {', '.join(COMPUTE_UNITS)}")
        if sys.platform != "darwin":
            raise BackendMissing(f"{path.name}: CoreML packages run only on macOS (Core ML predicts there, not on "
                                 f"{platform.system()}); here inspect and verify them, or run an ONNX artifact (--to onnx)")
        ct = coremltools()
        inputs, outputs, metadata, spec = describe(path)
        self._images = {name: image["color_layout"] for name, image in image_inputs(spec).items()}
        units = getattr(ct.ComputeUnit, compute_units or ("CPU_ONLY" if device == "cpu" else "ALL"))
        try:
            self._model = ct.models.MLModel(str(path), compute_units=units)
        except Exception as exc:  # noqa: BLE001 - Core ML's compiler refuses a package
            raise InputError(f"Core ML cannot load {path} ({first_line(exc)}); convert it again") from exc
        self._classic = classic_predictor(self._model, spec, inputs, outputs) if is_classic(spec) else None
        super().__init__(inputs, outputs, metadata, device=device, path=str(path), threads=threads)

    def run(self, feeds):
        """Core ML takes int32 where the source took int64 (token ids) and float32 where it took bool (a
        mask): the same values, converted here, so that an app's or the check's arrays go in as they are. Image
        inputs take their uint8 pixels as they are."""
        return super().run({name: value if name in self._images else _as_coreml(name, value)
                            for name, value in dict(feeds).items()})

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._classic is not None:
            return self._classic(feeds)
        if self._images:  # coremltools' predict takes an image input as a PIL image
            feeds = {name: _pil_image(value, self._images[name]) if name in self._images else value
                     for name, value in feeds.items()}
        result = self._model.predict(feeds)
        return [np.asarray(result[name]) for name in self._output_names]


def package_metadata(source, **extra: str) -> dict[str, str]:
    """A package's user-defined metadata: what the artifact says of itself (``ModelMeta.to_props``), its inputs'
    dim names (``DIM_NAMES``), which the spec does not keep, and ``extra`` entries."""
    dims = {s.name: [d if isinstance(d, str) else None for d in s.shape] for s in source.inputs}
    return {**(source.meta.to_props() if source.meta else {}), DIM_NAMES: json.dumps(dims), **extra}


def _pil_image(pixels: np.ndarray, color_layout: str):
    """One image, (1, C, H, W) in the package's channel order (uint8; float32 for GRAYSCALE_FLOAT16), as the PIL
    image Core ML reads: RGB, L, or F (a BGR package's channels reversed: PIL images are RGB, Core ML reorders
    them)."""
    from PIL import Image

    channels = pixels[0]
    if color_layout == "GRAYSCALE_FLOAT16":
        return Image.fromarray(channels[0].astype(np.float32), "F")
    if color_layout == "GRAYSCALE":
        return Image.fromarray(channels[0], "L")
    return Image.fromarray(np.ascontiguousarray((channels[::-1] if color_layout == "BGR" else channels).transpose(1, 2, 0)),
                           "RGB")


class PixelReference(Runtime):
    """``reference`` (a Runtime of the source) fed pixels where a package takes images: each image input
    takes uint8 (N, C, H, W) and passes it on normalized as ``images`` ({input: ``IMAGE_INPUTS`` entry}) says,
    so that the package and its source are compared on the same pictures."""

    def __init__(self, reference: Runtime, images: dict):
        from ..datafiles import ImageOptions

        self.backend = reference.backend
        self._reference = reference
        self._normalizations = {name: ImageOptions(mean=image["mean"], std=image["std"], scale=image["scale"])
                               for name, image in images.items()}
        inputs = [TensorSpec(s.name, s.shape, "uint8", ranges=s.ranges) if s.name in images else s
                  for s in reference.inputs]
        super().__init__(inputs, reference.outputs, reference.metadata, device=reference.device, path=reference.path)

    def _run(self, feeds):
        result = self._reference.run({name: self._normalizations[name].normalize(value, channel_axis=1)
                                      if name in self._normalizations else value for name, value in feeds.items()})
        return [result[name] for name in self._output_names]

    def close(self) -> None:
        self._reference.close()
        super().close()


def _as_coreml(name: str, value):
    value = np.asarray(value)
    if value.dtype == bool:
        return value.astype(np.float32)
    if value.dtype.kind in "iu" and value.dtype != np.int32:
        if value.size and (value.min() < np.iinfo(np.int32).min or value.max() > np.iinfo(np.int32).max):
            raise InputError(f"input {name!r} holds values beyond int32, which Core ML takes; give smaller ones")
        return value.astype(np.int32)
    return value


def _spec_file(path: Path) -> Path:
    """The model spec file the package's Manifest.json names, checked before coremltools reads it: a crafted
    package could name a file outside itself (``/dev/zero``: a read that never ends) or hold a link to one."""
    folder_entries(path)  # a link or special file inside is refused
    try:
        manifest = json.loads((path / "Manifest.json").read_text())
        named = PurePosixPath(manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"])
    except (OSError, UnicodeDecodeError, ValueError, LookupError, TypeError) as exc:
        raise InputError(f"{path} is not a readable CoreML package (its Manifest.json names no model: "
                         f"{type(exc).__name__}: {first_line(exc)}); convert it again") from exc
    spec_file = path / "Data" / named
    if named.is_absolute() or ".." in named.parts or not spec_file.is_file():
        raise InputError(f"{path} is not a readable CoreML package: its Manifest.json names {str(named)!r}, which is "
                         "no file inside it; convert it again")
    return spec_file


def describe(path: Path):
    """Inputs (with their ranges), outputs and metadata from the package's spec, without loading the model. An
    image input is uint8 pixels (1, C, H, W), channels first as the source took them (``image_inputs``)."""
    ct = coremltools()
    _spec_file(Path(path))
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged package
        raise InputError(f"{path} is not a readable CoreML package ({first_line(exc)}); convert it again") from exc
    if spec.WhichOneof("Type") is None:
        raise InputError(f"{path} holds an empty Core ML model (no model type in its spec); convert it again")

    metadata = dict(spec.description.metadata.userDefined)
    try:
        names = json.loads(metadata.get(DIM_NAMES, "{}"))
    except ValueError:
        names = {}
    # what edgeml wrote, or nothing: a name list that is not one is ignored, as a missing one is
    names = {k: v for k, v in names.items() if isinstance(v, list)} if isinstance(names, dict) else {}
    if is_classic(spec):  # scikit-learn's: one row per prediction (runtimes.coreml_classic)
        return (*describe_classic(spec, names), metadata, spec)
    if "main" not in spec.mlProgram.functions:
        raise InputError(f"{path}: its Core ML program has no main function; convert it again")

    def dtype(feature) -> str:
        code = feature.type.multiArrayType.dataType
        if code not in _DTYPES:
            raise InputError(f"{path}: input or output {feature.name!r} has a Core ML array type ({code}) edgeml does "
                             "not read; convert it again with edgeml")
        return _DTYPES[code]

    def tensor(feature) -> TensorSpec:
        array = feature.type.multiArrayType
        image = feature.type.imageType if feature.type.WhichOneof("Type") == "imageType" else None
        if image is not None and image.colorSpace not in _COLOR_SPACES:
            raise InputError(f"{path}: image input {feature.name!r} has a Core ML color space ({image.colorSpace}) "
                             "edgeml does not read; convert it again with edgeml")
        given = names.get(feature.name) or []
        shape, ranges = [], {}
        sizes, bounds_of = (_image_shape(image), _image_bounds(image)) if image else (array.shape, _axis_bounds(array))
        for axis, (size, bounds) in enumerate(zip(sizes, bounds_of)):
            if bounds is not None and bounds.lowerBound != bounds.upperBound:
                name = (given[axis] if axis < len(given) and given[axis] else None) or f"{feature.name}_dim{axis}"
                shape.append(name)
                if bounds.upperBound > 0:  # -1: unbounded
                    ranges[name] = DimRange(bounds.lowerBound, bounds.upperBound, bounds.upperBound)
            else:
                shape.append(int(size))
        pixels = "float32" if image is not None and image.colorSpace == 40 else "uint8"  # GRAYSCALE_FLOAT16: any value
        return TensorSpec(feature.name, tuple(shape), pixels if image is not None else dtype(feature), ranges=ranges)

    inputs = [tensor(f) for f in spec.description.input]
    # mlprogram outputs state no shape: "?" marks it unknown (its rank too)
    outputs = [TensorSpec(f.name, tuple(int(d) for d in f.type.multiArrayType.shape) or ("?",), dtype(f))
               for f in spec.description.output]
    return inputs, outputs, metadata, spec


class _Bounds(NamedTuple):
    lowerBound: int
    upperBound: int


def _axis_bounds(array) -> list:
    """Each axis's (lowerBound, upperBound): from the shape range, or for enumerated shapes the smallest and
    largest size each axis takes (None: fixed)."""
    if array.shapeRange.sizeRanges:
        return list(array.shapeRange.sizeRanges)
    shapes = enumerated_shapes(array)
    if shapes:
        return [_Bounds(min(sizes), max(sizes)) for sizes in zip(*shapes)]
    return [None] * len(array.shape)


def enumerated_shapes(array) -> list[list[int]]:
    """The shapes an input with ``EnumeratedShapes`` takes ([] for a range or a fixed shape); ``array``: its
    multiArrayType, or its imageType (shapes (1, C, H, W))."""
    if hasattr(array, "enumeratedSizes"):
        channels = _COLOR_SPACES.get(array.colorSpace, ("", 3))[1]
        return [[1, channels, size.height, size.width] for size in array.enumeratedSizes.sizes]
    return [list(shape.shape) for shape in array.enumeratedShapes.shapes]


def feature_type(feature):
    """A feature's own type message (its multiArrayType, imageType...)."""
    return getattr(feature.type, feature.type.WhichOneof("Type"))


def _image_shape(image) -> list[int]:
    return [1, _COLOR_SPACES.get(image.colorSpace, ("", 3))[1], image.height, image.width]


def _image_bounds(image) -> list:
    """An image input's axes' bounds, as ``_axis_bounds``: batch and channels fixed, height and width from
    its size range or enumerated sizes."""
    if image.WhichOneof("SizeFlexibility") == "imageSizeRange":
        ranges = image.imageSizeRange
        return [None, None, ranges.heightRange, ranges.widthRange]
    shapes = enumerated_shapes(image)
    return [None, None, *(_Bounds(min(sizes), max(sizes)) for sizes in list(zip(*shapes))[2:])] if shapes else [None] * 4


def image_inputs(spec) -> dict:
    """The package's image inputs: {name: {color_layout, and what edgeml recorded of their preprocessing
    (``IMAGE_INPUTS``: scale, mean, std, coreml_scale, coreml_bias, std_in_program)}}."""
    try:
        recorded = json.loads(spec.description.metadata.userDefined.get(IMAGE_INPUTS, "{}"))
    except ValueError:
        recorded = {}
    return {f.name: {**recorded.get(f.name, {}), "color_layout": _COLOR_SPACES.get(f.type.imageType.colorSpace,
                                                                                  ("unknown", 0))[0]}
            for f in spec.description.input if f.type.WhichOneof("Type") == "imageType"}


#: The compressed-weight ops of an mlprogram and the argument holding the stored values.
_COMPRESSED = {"constexpr_affine_dequantize": "quantized_data", "constexpr_blockwise_shift_scale": "data",
               "constexpr_lut_to_dense": "indices"}


def program_contents(spec) -> tuple[Counter, Counter]:
    """The main function's op histogram, and its weights' element counts by how they are stored: "float16",
    "int8", "int4", ..., and "lutN" for palettized weights (N-bit indices into a table of values). A
    compressed weight counts once, with the size of the dense tensor it expands to."""
    from coremltools.proto import MIL_pb2

    main = spec.mlProgram.functions["main"]
    block = main.block_specializations[main.opset]
    ops, weights = Counter(op.type for op in block.operations), Counter()

    def dims(tensor) -> list[int]:
        return [d.constant.size for d in tensor.dimensions]

    def argument(op, name):  # an attribute before iOS18, an inline input binding since
        if name in op.attributes:
            return op.attributes[name].type.tensorType
        bindings = [b for b in op.inputs[name].arguments if b.WhichOneof("binding") == "value"] if name in op.inputs else []
        return bindings[0].value.type.tensorType if bindings else None

    for op in block.operations:
        if op.type == "const":
            value = op.attributes.get("val")
            if value is not None and value.type.WhichOneof("type") == "tensorType":
                weights[MIL_pb2.DataType.Name(value.type.tensorType.dataType).lower()] += int(np.prod(dims(value.type.tensorType)))
        elif op.type in _COMPRESSED:
            stored = argument(op, _COMPRESSED[op.type])
            if stored is None:
                continue
            kind = MIL_pb2.DataType.Name(stored.dataType).lower()
            if op.type == "constexpr_lut_to_dense":
                lut = dims(argument(op, "lut"))
                kind = f"lut{int(np.log2(lut[0] if len(lut) == 1 else lut[-2]))}"
            weights[kind] += int(np.prod(dims(op.outputs[0].type.tensorType)))
    return ops, weights


#: The spec version each deployment target reads (coremltools' ``ct.target`` values); macOS13..15 are
#: iOS16..18's twins.
SPEC_VERSIONS = {"iOS16": 7, "iOS17": 8, "iOS18": 9}
TWINS = {"macOS13": "iOS16", "macOS14": "iOS17", "macOS15": "iOS18"}
#: How compressed weights are stored (``program_contents``), besides "lutN".
_STORED = {"int8", "uint8", "int4", "uint4"}


def spec_version(min_target: str) -> int:
    """The Core ML spec version a deployment target reads."""
    return SPEC_VERSIONS[TWINS.get(min_target, min_target)]


def target_of(specification_version: int) -> str:
    """The oldest deployment target that reads a spec version (7: iOS16/macOS13, 8: iOS17, 9: iOS18)."""
    return next((name for name, version in SPEC_VERSIONS.items() if version >= specification_version),
                "newer than iOS18")


def compression_of(ops: Counter, weights: Counter) -> str | None:
    """The compression a program's ops and weights show, named as the ``compress`` option names it: "w8a8"
    (quantized activations), else the most common compressed weight storage; None for float weights only."""
    if ops["quantize"] and ops["dequantize"]:
        return "w8a8"
    stored = compressed_weights(weights)
    if not stored:
        return None
    kind = max(stored, key=stored.get)
    return f"palettize{kind[3:]}" if kind.startswith("lut") else kind


def compressed_weights(weights: Counter) -> dict[str, int]:
    """The weights stored compressed ({storage: elements}), of a ``program_contents`` count."""
    return {kind: n for kind, n in weights.items() if kind in _STORED or kind.startswith("lut")}
