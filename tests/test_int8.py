"""INT8 end to end: models trained here on scikit-learn's data, quantized with real calibration sources,
judged against FP32 on held-out data, with the fallback and the failures a user meets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml.calibration.int8 import Int8Options
from edgeml.cli import main
from edgeml.errors import CheckFailed, EdgeMLError

from .conftest import nn, torch


def _train(model, X, y, epochs=60, lr=1e-2):
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    X, y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


class Standardized(nn.Module):
    """An MLP on raw breast-cancer features: the standardization lives in the model, as buffers."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("std", torch.from_numpy(std))
        self.net = nn.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


class DeepOutliers(nn.Module):
    """Eight hidden layers, each with an ignored constant channel of 10000: more damage than three rounds
    of fallback can undo."""

    def __init__(self, depth: int = 8):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(64, 64) for _ in range(depth)])
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)

    def add_outliers(self):
        with torch.no_grad():
            for layer, following in zip(self.layers, [*self.layers[1:], self.head]):
                layer.weight[0] = 0
                layer.bias[0] = 10000
                following.weight[:, 0] = 0
        return self


class Outlier(nn.Module):
    """An MLP whose middle activation has one constant channel of 10000 that the next layer ignores: the
    same function in FP32, but a per-tensor INT8 range that wipes out every other channel there."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))

    def add_outlier(self):
        with torch.no_grad():
            self.b.weight[0] = 0
            self.b.bias[0] = 10000
            self.c.weight[:, 0] = 0
        return self


@pytest.fixture(scope="module")
def digits_files(digits, cnn, tmp_path_factory):
    """The CNN as ONNX, a calibration npz, and the test set with labels."""
    X_train, X_test, _, y_test = digits
    folder = tmp_path_factory.mktemp("int8")
    np.savez(folder / "calib.npz", x=X_train.reshape(-1, 1, 8, 8))
    np.save(folder / "test.npy", X_test.reshape(-1, 1, 8, 8))
    np.save(folder / "labels.npy", y_test)
    fp32 = edgeml.convert(cnn, "onnx", folder / "fp32", inputs=["x:1x1x8x8"], dynamic_batch=True, name="cnn").onnx
    return folder, fp32


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_cnn_on_digits_keeps_accuracy(digits_files, method):
    folder, fp32 = digits_files
    options = Int8Options(calib=folder / "calib.npz", calib_samples=256, method=method,
                          eval_data=folder / "test.npy", eval_labels=folder / "labels.npy")
    result = edgeml.convert(fp32, "onnx", folder / method, int8=options)
    report = result.artifacts[1].record["quantization"]
    accuracy = report["accuracy"]
    assert accuracy["accuracy_fp32"] > 0.85 and accuracy["accuracy_drop_points"] <= 1.0
    assert report["calibration_samples"] == 256 and report["method"] == method
    assert edgeml.inspect(result.artifacts[1].path)["quantized"]
    assert report["size_int8_bytes"] < report["size_fp32_bytes"]
    assert len(report["lowest_sqnr_layers"]) > 0 and report["latency"]["p50_int8_ms"] > 0
    entry = json.loads(result.manifest.read_text())["artifacts"][1]
    assert entry["file"] == "cnn.int8.onnx" and entry["precision"] == "int8" and entry["check"]["status"] == "passed"


def test_tensorrt_flavour_has_symmetric_activations(digits_files):
    import onnx
    from onnx import numpy_helper

    folder, fp32 = digits_files
    result = edgeml.convert(fp32, "onnx", folder / "trt", int8=Int8Options(calib=folder / "calib.npz", flavour="tensorrt"))
    model = onnx.load(str(result.artifacts[1].path))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [initializers[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)


def test_mlp_on_breast_cancer_from_a_csv(cancer, tmp_path):
    import pandas as pd

    X_train, X_test, y_train, y_test = cancer
    model = _train(Standardized(X_train.mean(0), X_train.std(0) + 1e-6), X_train, y_train)
    pd.DataFrame(X_train).to_csv(tmp_path / "calib.csv", index=False)
    np.save(tmp_path / "test.npy", X_test)
    np.save(tmp_path / "labels.npy", y_test)
    options = Int8Options(calib=tmp_path / "calib.csv", eval_data=tmp_path / "test.npy", eval_labels=tmp_path / "labels.npy")
    result = edgeml.convert(model, "onnx", tmp_path / "out", inputs=["x:1x30"], dynamic_batch=True, int8=options)
    accuracy = result.artifacts[1].record["quantization"]["accuracy"]
    assert accuracy["accuracy_fp32"] > 0.9 and accuracy["accuracy_drop_points"] <= 1.0


def test_transformer_encoder_dynamic_int8(encoder, tmp_path):
    result = edgeml.convert(encoder, "onnx", tmp_path, inputs=["ids:1x16:int64"], dynamic_batch=True, int8=True)
    report = result.artifacts[1].record["quantization"]
    assert report["mode"] == "dynamic" and report["accuracy"]["cosine"] >= 0.99
    assert "MatMulInteger" in edgeml.inspect(result.artifacts[1].path)["ops"]


def test_images_folder_through_the_cli(digits, cnn, tmp_path):
    from PIL import Image

    X_train, X_test, _, y_test = digits
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        Image.fromarray((X_train[i].reshape(8, 8) * 255).round().astype(np.uint8), mode="L").save(images / f"{i:03d}.png")
    torch.onnx  # the CNN's input takes [0, 1] pixels: --scale 255 maps PNG bytes back
    path = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(cnn, (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(path))
    np.save(tmp_path / "test.npy", X_test.reshape(-1, 1, 8, 8))
    np.save(tmp_path / "labels.npy", y_test)
    out = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "build"), "--int8", "--calib", str(images),
                                    "--calib-samples", "32", "--scale", "255", "--eval-data", str(tmp_path / "test.npy"),
                                    "--eval-labels", str(tmp_path / "labels.npy")])
    assert out.exit_code == 0, out.output
    assert "wrote" in out.output and "cnn.int8.onnx" in out.output and "accuracy:" in out.output
    entry = json.loads((tmp_path / "build" / "edgeml.json").read_text())["artifacts"][1]
    assert entry["build"]["quantization"]["preprocessing"]["scale"] == 255


def test_a_python_function_as_the_source(digits, digits_files, tmp_path, monkeypatch):
    X_train, _, _, _ = digits
    np.save(tmp_path / "pool.npy", X_train[:160].reshape(-1, 1, 8, 8))
    (tmp_path / "loader.py").write_text(
        "import numpy as np\n"
        "def batches():\n"
        "    pool = np.load('pool.npy')\n"
        "    for i in range(0, len(pool), 16):\n"
        "        yield {'x': pool[i:i + 16]}\n"
    )
    monkeypatch.chdir(tmp_path)
    _, fp32 = digits_files
    options = Int8Options(calib="loader.py:batches", calib_samples=96, eval_samples=64, max_accuracy_drop=5)
    result = edgeml.convert(fp32, "onnx", tmp_path / "out", int8=options)
    report = result.artifacts[1].record["quantization"]
    assert report["calibration_samples"] == 96 and report["accuracy"]["samples"] == 64


def test_fallback_keeps_the_worst_layers_in_fp32_and_passes(digits, tmp_path):
    X_train, X_test, y_train, y_test = digits
    model = _train(Outlier(), X_train, y_train, epochs=20).add_outlier()
    np.save(tmp_path / "calib.npy", X_train)
    np.save(tmp_path / "test.npy", X_test)
    np.save(tmp_path / "labels.npy", y_test)
    options = Int8Options(calib=tmp_path / "calib.npy", eval_data=tmp_path / "test.npy", eval_labels=tmp_path / "labels.npy")
    messages = []
    result = edgeml.convert(model, "onnx", tmp_path / "out", inputs=["x:1x64"], dynamic_batch=True, int8=options,
                            progress=messages.append)
    report = result.artifacts[1].record["quantization"]
    assert report["rounds"] > 1 and report["excluded_layers"]
    assert any("FAILED" in m for m in messages) and report["accuracy"]["passed"]
    assert edgeml.inspect(result.artifacts[1].path)["quantized"]  # the rest stayed INT8


def test_gate_failure_exits_1_and_writes_no_int8(digits, tmp_path):
    X_train, X_test, y_train, y_test = digits
    model = _train(DeepOutliers(), X_train, y_train, epochs=20).add_outliers()
    path = tmp_path / "outlier.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("b")},)),
                      str(path))
    np.save(tmp_path / "calib.npy", X_train)
    out = CliRunner().invoke(main, ["convert", str(path), "-o", str(tmp_path / "build"), "--int8", "--calib",
                                    str(tmp_path / "calib.npy"), "--max-accuracy-drop", "0"])
    assert out.exit_code == 1, out.output
    assert "accuracy gate" in out.output and "nothing written" in out.output
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == ["edgeml.json", "outlier.onnx"]


def test_int8_errors(digits_files, tmp_path):
    folder, fp32 = digits_files
    runner = CliRunner()
    no_int8 = runner.invoke(main, ["convert", str(fp32), "-o", str(tmp_path / "a"), "--calib", str(folder / "calib.npz")])
    assert no_int8.exit_code == 2 and "add --int8" in no_int8.output
    labels_alone = runner.invoke(main, ["convert", str(fp32), "-o", str(tmp_path / "b"), "--int8", "--calib",
                                        str(folder / "calib.npz"), "--eval-labels", str(folder / "labels.npy")])
    assert labels_alone.exit_code == 2 and "give both" in labels_alone.output
    np.save(tmp_path / "wrong.npy", np.zeros((10, 3, 8, 8), np.float32))
    with pytest.raises(EdgeMLError, match="wrong.npy"):
        edgeml.convert(fp32, "onnx", tmp_path / "c", int8=Int8Options(calib=tmp_path / "wrong.npy"))
    assert not (tmp_path / "c" / "cnn.int8.onnx").exists()
    with pytest.raises(CheckFailed):
        edgeml.convert(fp32, "onnx", tmp_path / "d", int8=Int8Options(calib=folder / "calib.npz", max_accuracy_drop=0,
                                                                     calib_samples=2, max_rounds=0))
