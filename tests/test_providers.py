"""The backend a runtime really uses: onnxruntime falls back to the CPU when a GPU provider cannot start;
asking for cuda or tensorrt and getting the CPU is an error (exit 3), and every runtime reports its providers."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml.cli import main
from edgeml.errors import EXIT_MISSING_BACKEND, BackendMissing


@pytest.fixture(scope="module")
def add_onnx(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    path = tmp_path_factory.mktemp("providers") / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def gpu_listed(monkeypatch):
    """An onnxruntime that lists the GPU providers (as onnxruntime-gpu does without usable CUDA libraries) while
    its sessions can only run on the CPU: the real session falls back, as onnxruntime-gpu does on such a host."""
    import onnxruntime as ort

    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", *ort.get_available_providers()]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    with warnings.catch_warnings():  # onnxruntime's own "not in available provider names" warning
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.mark.parametrize("device, provider", [("cuda", "CUDAExecutionProvider"), ("cuda:0", "CUDAExecutionProvider"),
                                              ("tensorrt", "TensorrtExecutionProvider")])
def test_a_silent_fallback_to_the_cpu_is_an_error(add_onnx, gpu_listed, device, provider):
    with pytest.raises(BackendMissing) as info:
        edgeml.load(add_onnx, device=device)
    message = str(info.value)
    assert f"device {device!r} asked for onnxruntime's {provider}, but the session runs on CPUExecutionProvider" in message
    assert "onnxruntime-gpu build matching this machine's CUDA version" in message and "--device cpu" in message
    assert info.value.exit_code == EXIT_MISSING_BACKEND


def test_bench_on_a_fallen_back_device_exits_3(add_onnx, gpu_listed):
    result = CliRunner().invoke(main, ["bench", str(add_onnx), "--device", "cuda", "--runs", "5", "--min-seconds", "0"])
    assert result.exit_code == EXIT_MISSING_BACKEND, result.output
    assert "CUDAExecutionProvider" in result.output and "--device cpu" in result.output


def test_runtimes_report_the_backend_they_use(add_onnx, logreg, cancer):
    with edgeml.load(add_onnx) as runtime:
        assert runtime.providers == ["CPUExecutionProvider"]
        assert runtime(np.ones((2, 4), np.float32)).shape == (2, 4)
    assert runtime.providers == ["CPUExecutionProvider"]  # still known after close, for reports
    from edgeml.runtimes.sklearn import SklearnRuntime
    from edgeml.spec import TensorSpec

    assert SklearnRuntime(logreg, [TensorSpec("X", ("batch", 30), "float32")]).providers == ["cpu"]


def test_bench_records_the_providers_used(add_onnx, tmp_path):
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(add_onnx), "--runs", "5", "--warmup-ms", "0", "--min-seconds", "0",
                                       "--max-seconds", "1", "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["results"][0]["providers"] == ["CPUExecutionProvider"]
