"""CoreML image inputs (``--mean/--std/--scale`` with ``--to coreml``): the package takes pixels (an app's
CVPixelBuffer) and normalizes them itself, with Core ML's one scale and per-channel bias, and a per-channel std
divided inside the program. Checked here from the saved spec: the input type, the preprocessing ops and their
numbers (run in numpy against the source's normalization), the metadata, inspect and the manifest; predicting
needs macOS (that test skips elsewhere)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml.cli import main
from edgeml.datafiles import ImageOptions
from edgeml.errors import InputError
from edgeml.manifest import MANIFEST_NAME

from .conftest import torch
from .test_coreml_target import _Net  # the RGB CNN

ct = pytest.importorskip("coremltools")

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class _Gray(torch.nn.Module):
    """One channel in; a 64x64 linear layer, big enough for int8 weights."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(1, 64, 3, padding=1)
        self.hidden = torch.nn.Linear(64, 64)
        self.head = torch.nn.Linear(64, 2)

    def forward(self, x):
        return self.head(torch.relu(self.hidden(torch.relu(self.conv(x)).mean((2, 3)))))


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """Per-channel std, through the Python API, from a .pt2 (whose module refuses train(): the std division is
    wrapped around it without calling it)."""
    out = tmp_path_factory.mktemp("rgb")
    model = _Net().eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 16, 16),)), out / "rgb.pt2")
    edgeml.convert(out / "rgb.pt2", "coreml", out, name="model",
                   target_options={"coreml": {"image": {"mean": MEAN, "std": STD}}})
    return model, out / "model.mlpackage", out


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    """One std for the channel, a height and width range, and int8 weights, through the CLI."""
    out = tmp_path_factory.mktemp("gray")
    model = _Gray().eval()
    size = torch.export.Dim("size", min=8, max=32)
    torch.export.save(torch.export.export(model, (torch.randn(1, 1, 16, 16),), dynamic_shapes=({2: size, 3: size},)),
                      out / "gray.pt2")
    result = CliRunner().invoke(main, ["convert", str(out / "gray.pt2"), "--to", "coreml", "--int8", "--mean", "0.5",
                                       "--std", "0.25", "--scale", "255", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return model, out, result.output


def _entry(out, name):
    return next(e for e in json.loads((out / MANIFEST_NAME).read_text())["artifacts"] if e["file"] == name)


def _preprocessing(package, name: str, pixels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """What the package's program does to ``pixels`` before its first layer: its ops from the input on (mul,
    add, cast, real_div), run in numpy with the constants the spec stores; and their types."""
    from coremltools.proto import MIL_pb2

    main_ = ct.utils.load_spec(str(package)).mlProgram.functions["main"]
    ops = main_.block_specializations[main_.opset].operations

    def constant(value) -> np.ndarray:
        tensor, kind = value.immediateValue.tensor, MIL_pb2.DataType.Name(value.type.tensorType.dataType)
        if kind == "FLOAT16":
            return np.frombuffer(tensor.bytes.values, np.float16).astype(np.float32)
        return np.asarray(tensor.floats.values, np.float32)

    consts = {op.outputs[0].name: op.attributes["val"] for op in ops if op.type == "const"}
    value, current, done = pixels.astype(np.float32), name, []
    apply = {"mul": np.multiply, "add": np.add, "sub": np.subtract, "real_div": np.divide}
    while True:
        op = next((o for o in ops if o.type != "const" and "x" in o.inputs
                   and o.inputs["x"].arguments[0].name == current), None)
        if op is None or op.type not in (*apply, "cast"):
            return value, done
        if op.type in apply:
            other = constant(consts[op.inputs["y"].arguments[0].name])
            value = apply[op.type](value, other.reshape((1, -1, 1, 1)) if other.size > 1 else other)
        done.append(op.type)
        current = op.outputs[0].name


def test_per_channel_std_makes_an_rgb_image_input_divided_in_the_program(rgb):
    model, package, out = rgb
    spec = ct.utils.load_spec(str(package))
    image = spec.description.input[0].type.imageType
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    assert (image.width, image.height, ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace)) == (
        16, 16, "RGB")
    assert spec.description.output[0].type.WhichOneof("Type") == "multiArrayType"  # outputs stay float tensors
    recorded = json.loads(spec.description.metadata.userDefined["edgeml.image_inputs"])["x"]
    assert recorded == ({"color_layout": "RGB", "scale": 255.0, "mean": MEAN, "std": STD,
                                      "coreml_scale": 1 / 255, "coreml_bias": [-m for m in MEAN],
                                      "std_in_program": True})
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, 16, 16)).astype(np.uint8)
    computed, ops = _preprocessing(package, "x", pixels)
    assert ops == ["mul", "add", "cast", "mul"]  # Core ML's scale and bias, fp16, then the division by std
    expected = (pixels / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    np.testing.assert_allclose(computed, expected, atol=2e-2)  # the std divisor is stored in fp16
    with torch.no_grad():  # the model on what the package feeds it, against the model on the source's input
        got, want = (model(torch.from_numpy(np.asarray(a, np.float32))).numpy() for a in (computed, expected))
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=1e-2)
    as_recorded = ImageOptions(mean=recorded["mean"], std=recorded["std"], scale=recorded["scale"])
    np.testing.assert_allclose(as_recorded.normalize(pixels, channel_axis=1), expected, rtol=1e-6, atol=1e-6)


def test_inspect_and_the_manifest_show_the_image_input(rgb):
    _, package, out = rgb
    info = edgeml.inspect(package)
    assert info["inputs"] == [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "uint8"}]
    assert info["image_inputs"]["x"]["color_layout"] == "RGB" and info["image_inputs"]["x"]["std_in_program"]
    entry = _entry(out, "model.mlpackage")
    assert entry["build"]["conversion"][0]["image_inputs"]["x"]["mean"] == MEAN
    if sys.platform != "darwin":
        assert entry["check"]["status"] == "unverified"
        assert "input 'x' takes RGB images" in entry["check"]["reason"]
    shown = CliRunner().invoke(main, ["inspect", str(package)])
    assert shown.exit_code == 0 and "x:1×3×16×16:uint8" in shown.output and "image inputs: x" in shown.output
    assert edgeml.verify(out).ok


def test_one_std_goes_into_the_scale_of_a_grayscale_range_and_int8_keeps_it(gray):
    _, out, output = gray
    assert f"{out / 'gray.int8.mlpackage'} (" in output
    for name in ("gray.mlpackage", "gray.int8.mlpackage"):
        spec = ct.utils.load_spec(str(out / name))
        image = spec.description.input[0].type.imageType
        assert ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace) == "GRAYSCALE"
        assert (image.imageSizeRange.heightRange.lowerBound, image.imageSizeRange.heightRange.upperBound) == (8, 32)
        info = edgeml.inspect(out / name)
        shape = info["inputs"][0]["shape"]  # the .pt2's dim name for both
        assert shape[:2] == [1, 1] and shape[2] == shape[3] and info["inputs"][0]["dtype"] == "uint8"
        assert info["inputs"][0]["ranges"] == {shape[2]: [8, 32, 32]}
        assert info["image_inputs"]["x"] == ({
            "color_layout": "GRAYSCALE", "scale": 255.0, "mean": [0.5], "std": [0.25], "coreml_scale": 1 / (255 * 0.25),
            "coreml_bias": [-2.0], "std_in_program": False})
        pixels = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
        computed, ops = _preprocessing(out / name, "x", pixels)
        assert ops[:2] == ["mul", "add"] and "real_div" not in ops and ops.count("mul") == 1
        np.testing.assert_allclose(computed, (pixels / 255.0 - 0.5) / 0.25, atol=1e-5)
    assert edgeml.inspect(out / "gray.int8.mlpackage")["compression"] == "int8"
    if sys.platform != "darwin":
        assert _entry(out, "gray.int8.mlpackage")["check"]["status"] == "unverified"


def test_the_check_feeds_pictures_to_the_package_and_normalized_ones_to_the_source(rgb):
    """What the macOS check runs (``pipeline._check`` with images), here on the source side: pixel feeds
    spanning 0..255, and the source fed them normalized as the package's metadata says."""
    from edgeml import sources
    from edgeml.pipeline import CHECK_SAMPLES, enumerated_sizes, pixel_feeds
    from edgeml.runtimes.coreml import PixelReference
    from edgeml.sources import load_source

    model, package, _ = rgb
    source = load_source(model, inputs=["x:1x3x16x16"])
    recorded = edgeml.inspect(package)["image_inputs"]
    reference = PixelReference(sources.reference(source), recorded)
    assert reference.inputs[0].dtype == "uint8" and reference.output_names == ["output"]
    feeds, origin = pixel_feeds(reference.inputs, {})
    assert feeds["x"].shape == (CHECK_SAMPLES, 3, 16, 16) and feeds["x"].dtype == np.uint8
    assert feeds["x"].min() == 0 and feeds["x"].max() == 255 and "pictures" in origin
    got = reference.run({"x": feeds["x"][:1]})["output"]
    normalized = (feeds["x"][:1] / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    with torch.no_grad():
        want = model(torch.from_numpy(normalized.astype(np.float32))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # a package with enumerated shapes is checked at its default one: its first (the batch is the check's)
    specs = load_source(model, inputs=["x:1..8x3x8..32x8..32"]).inputs
    dims = specs[0].shape
    assert enumerated_sizes(specs, {"x": [[1, 3, 24, 16], [1, 3, 32, 32]]}) == {dims[2]: 24, dims[3]: 16}
    assert enumerated_sizes(specs, None) == {}


def test_the_runtime_gives_core_ml_the_pixels_as_a_picture(rgb, monkeypatch):
    """What CoreMLRuntime does on macOS before Core ML predicts, run here with Core ML's MLModel stood in for:
    ``run`` and ``__call__`` take the uint8 pixels as they are (no int32 widening) and predict gets them as
    an RGB picture, channels last, the same values."""
    import edgeml.runtimes.coreml as coreml_runtime

    seen = []

    class _MLModel:  # Core ML itself, which Linux lacks: takes what predict is given, answers in its shape
        def __init__(self, path, compute_units=None):
            pass

        def predict(self, feeds):
            seen.append(feeds)
            return {"output": np.zeros((1, 4), np.float32)}

    monkeypatch.setattr(coreml_runtime, "sys", type("darwin", (), {"platform": "darwin"}))
    monkeypatch.setattr(ct.models, "MLModel", _MLModel)
    _, package, _ = rgb
    pixels = np.random.default_rng(3).integers(0, 256, (1, 3, 16, 16), dtype=np.uint8)
    with coreml_runtime.CoreMLRuntime(package) as runtime:
        assert [(s.name, s.shape, s.dtype) for s in runtime.inputs] == [("x", (1, 3, 16, 16), "uint8")]
        assert runtime.run({"x": pixels})["output"].shape == (1, 4) and runtime(pixels).shape == (1, 4)
    for feeds in seen:
        picture = feeds["x"]
        assert picture.mode == "RGB" and picture.size == (16, 16)
        np.testing.assert_array_equal(np.asarray(picture), pixels[0].transpose(1, 2, 0))
    assert len(seen) == 2


@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predicts only on macOS")
def test_on_macos_the_package_takes_pixels(rgb):
    model, package, out = rgb
    assert _entry(out, "model.mlpackage")["check"]["status"] == "passed"
    pixels = np.random.default_rng(1).integers(0, 256, (1, 3, 16, 16)).astype(np.uint8)
    with edgeml.load(package) as runtime:
        got = runtime.run({"x": pixels})["output"]
    normalized = (pixels / 255.0 - np.reshape(MEAN, (1, 3, 1, 1))) / np.reshape(STD, (1, 3, 1, 1))
    with torch.no_grad():
        want = model(torch.from_numpy(normalized.astype(np.float32))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-2, rtol=1e-2)


def test_bad_image_requests_fail_before_anything_is_written(tmp_path, gray):
    rgb = _Net().eval()

    class _Two(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    def api(model, spec, image, folder, to="coreml"):
        return lambda: edgeml.convert(model, to, tmp_path / folder, inputs=[spec],
                                      target_options={"coreml": {"image": image}})

    cases = [  # found before any export: with onnx asked for too, no ONNX file is written either
        (api(_Two(), "x:1x2x16x16", {"mean": [0.5]}, "a", "onnx,coreml"), "2 channels on axis 1, but Core ML images are RGB"),
        (api(torch.nn.Linear(4, 2), "x:1x4", {"mean": [0.5]}, "b"), "need one 4-D float input"),
        (api(rgb, "x:1x3x16x16", {"mean": [0.5, 0.5]}, "c"), "--mean has 2 values, but input x"),
        (api(rgb, "x:1..4x3x16x16", {"mean": MEAN}, "d"), "takes one image a call; give --input x:1x3x16x16"),
        (api(rgb, "x:1x3x16x16", ImageOptions(mean=MEAN, layout="NHWC"), "e"), "channels first"),
        (api(rgb, "x:1x3x16x16", {"mean": MEAN, "resize": (8, 8)}, "f"), "drop resize"),
        (api(rgb, "x:1x3x16x16", {"average": MEAN}, "g"), "unknown CoreML image option"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message):
            call()
    runner, pt2 = CliRunner(), str(gray[1] / "gray.pt2")
    onnx_only = runner.invoke(main, ["convert", pt2, "--scale", "1", "-o", str(tmp_path / "h")])
    assert onnx_only.exit_code == 2 and "apply with --int8" in onnx_only.output and "coreml to --to" in onnx_only.output
    resized = runner.invoke(main, ["convert", pt2, "--to", "coreml", "--mean", "0.5", "--resize", "8x8", "-o",
                                   str(tmp_path / "i")])
    assert resized.exit_code == 2 and "--resize sizes calibration images only" in resized.output
    assert not any(p.suffix in (".onnx", ".mlpackage") for p in tmp_path.rglob("*"))
