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


@pytest.fixture(scope="module")
def mlp_pt2(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 5)).eval()
    path = tmp_path_factory.mktemp("providers") / "mlp.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(3, 20),)), str(path))
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


def test_provider_options_go_to_the_gpu_provider(gpu_listed):
    from edgeml.runtimes.onnxrt import providers_for

    assert providers_for("cuda") == [("CUDAExecutionProvider", {}), "CPUExecutionProvider"]
    assert providers_for("tensorrt:1", {"trt_fp16_enable": "1", "trt_engine_cache_path": "cache"}) == [
        ("TensorrtExecutionProvider", {"device_id": 1, "trt_fp16_enable": "1", "trt_engine_cache_path": "cache"}),
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]


def test_runtime_options_that_cannot_apply_are_refused(add_onnx, mlp_pt2):
    with pytest.raises(edgeml.EdgeMLError, match="options of onnxruntime's CUDA and TensorRT providers"):
        edgeml.load(add_onnx, options={"trt_fp16_enable": "1"})
    with pytest.raises(edgeml.EdgeMLError, match="runtime options .* apply to artifacts"):
        edgeml.load(mlp_pt2, options={"trt_fp16_enable": "1"})


def test_both_onnxruntime_packages_is_named_with_the_fix(add_onnx, gpu_listed, monkeypatch):
    import edgeml.runtimes.onnxrt as onnxrt

    monkeypatch.setattr(onnxrt, "_installed", lambda name: True)
    with pytest.raises(BackendMissing, match="both installed.*pip uninstall -y onnxruntime onnxruntime-gpu"):
        edgeml.load(add_onnx, device="cuda")
    edgeml.load(add_onnx).close()  # the CPU provider works either way


def test_device_bound_calls_compute_what_run_does(add_onnx, mlp_pt2):
    """The GPU paths of bench (IOBinding, tensors placed once) exercised on the CPU: same outputs as ``run``."""
    from edgeml.runtimes.pytorch import flatten_outputs

    feeds = [{"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)}, {"x": np.ones((2, 4), np.float32)}]
    with edgeml.load(add_onnx) as runtime:
        call, copies = runtime.bound_call(feeds, "cpu")
        outputs = [call().copy_outputs_to_cpu()[0] for _ in feeds]
        assert [np.array_equal(o, runtime.run(f)["y"]) for o, f in zip(outputs, feeds)] == [True, True]
        assert set(copies) == {"host_to_device_ms", "device_to_host_ms"} and min(copies.values()) >= 0
    with edgeml.load(mlp_pt2) as torch_runtime:
        rows = [{torch_runtime.input_names[0]: np.full((3, 20), v, np.float32)} for v in (0.5, -2.0)]
        call, copies = torch_runtime.placed_call(rows)
        for feeds_ in rows:
            np.testing.assert_allclose(flatten_outputs(call())[0].numpy(), torch_runtime.run(feeds_)["output"], rtol=1e-6)
        assert set(copies) == {"host_to_device_ms", "device_to_host_ms"}


def test_bench_on_the_cpu_times_run_and_records_its_options(add_onnx):
    from edgeml.latency.runner import Method

    result = edgeml.bench(add_onnx, method=Method(min_runs=20, min_seconds=0, warmup_runs=1, warmup_ms=0))
    assert result.device_copies == {} and result.runtime_options == {} and result.providers == ["CPUExecutionProvider"]


@pytest.mark.skipif(not __import__("importlib").util.find_spec("torch") or not __import__("torch").cuda.is_available(),
                    reason="needs a CUDA GPU (torch.cuda.is_available())")
def test_bench_on_cuda_keeps_tensors_on_the_device(mlp_pt2):
    result = edgeml.bench(mlp_pt2, device="cuda")
    assert set(result.device_copies) == {"host_to_device_ms", "device_to_host_ms"} and result.clock == "wall"
