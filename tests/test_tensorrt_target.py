"""The TensorRT target (``--to tensorrt``) and runtime. What runs without TensorRT: the optimization profile
from dim ranges, the options, the flag logic against stand-ins shaped like the TensorRT 10 and 11 APIs, the
engine-record compatibility decisions, and the "no TensorRT here" path end to end (the ONNX artifact checked
and kept, exit 3 with the command for the device, nothing else written). Building and running an engine needs
TensorRT and an NVIDIA GPU: that class skips with the reason where they are missing."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml import backends
from edgeml.backends import tensorrt as trt_target
from edgeml.cli import main
from edgeml.errors import BackendMissing, InputError
from edgeml.manifest import MANIFEST_NAME
from edgeml.runtimes.tensorrt import compatibility_problem
from edgeml.spec import parse_spec

from .conftest import tiny_net, torch


# -- the optimization profile -----------------------------------------------------------------------------


def test_profile_shapes_come_from_the_dim_ranges():
    specs = [parse_spec("x:1..4..16x3x224x224"), parse_spec("ids:batch(1..16)xseq(8..64..128):int64")]
    assert trt_target.profile_shapes(specs) == {
        "x": ((1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 224, 224)),
        "ids": ((1, 8), (16, 64), (16, 128)),
    }
    assert trt_target.profile_shapes([parse_spec("t:2x3")]) == {"t": ((2, 3), (2, 3), (2, 3))}


def test_a_dim_without_a_range_asks_for_one():
    with pytest.raises(InputError, match=r"input 'ids' has dim 'seq' \(axis 1\) with no range.*--shape seq=MIN\.\.MAX "
                                         r"or --input ids:Nx1\.\.8"):
        trt_target.profile_shapes([parse_spec("ids:batch(1..8)xseq:int64")])


# -- options ------------------------------------------------------------------------------------------------


def test_options_are_checked_with_their_defaults(tmp_path):
    cache = tmp_path / "trt.cache"
    got = trt_target.check_options({"workspace": "2GiB", "timing_cache": str(cache), "opt_level": "5", "compat": "both"})
    assert got == {"workspace": 2 * 1024**3, "timing_cache": str(cache), "opt_level": 5, "compat": "both"}
    assert trt_target.check_options({}) == {"workspace": None, "timing_cache": None, "opt_level": None, "compat": "none"}
    assert trt_target.workspace_bytes(512) == trt_target.workspace_bytes("512MiB") == 512 * 1024**2
    assert trt_target.workspace_bytes("1.5G") == 3 * 1024**3 // 2
    command = trt_target.rebuild_command("build/m.fp16.onnx", got)
    assert command == (f"edgeml convert build/m.fp16.onnx --to tensorrt -o build --workspace 2048MiB "
                       f"--timing-cache {cache} --opt-level 5 --trt-compat both")


@pytest.mark.parametrize("options, message", [
    ({"workspace": "lots"}, "--workspace 'lots' is not a size"),
    ({"workspace": "2TiB"}, "outside 1 MiB..1 TiB"),
    ({"opt_level": 6}, "--opt-level 6 is not a builder optimization level; use 0 to 5"),
    ({"opt_level": True}, "--opt-level True"),
    ({"compat": "ampere"}, "--trt-compat 'ampere' is not one of none, version, hardware, both"),
    ({"timing_cache": "/no/such/folder/cache"}, "give a file in an existing folder"),
    ({"precision": "fp16"}, "unknown TensorRT option"),
])
def test_bad_options_are_usage_errors(options, message):
    with pytest.raises(InputError, match=message) as caught:
        trt_target.check_options(options)
    assert caught.value.exit_code == 2


def test_bad_options_fail_before_anything_is_exported(tmp_path):
    with pytest.raises(InputError, match="--opt-level 9"):
        edgeml.convert(tiny_net(), "onnx,tensorrt", tmp_path, inputs=["x:1..4x8"],
                       target_options={"tensorrt": {"opt_level": 9}})
    assert not list(tmp_path.iterdir())


# -- the flag logic against TensorRT 10- and 11-shaped stand-ins ---------------------------------------------


def _api(version: int):
    """A stand-in for the parts of the tensorrt module the builder touches: TensorRT 10 has the STRONGLY_TYPED
    network flag and the precision builder flags; 11 has neither (every network is strongly typed)."""
    creation = SimpleNamespace(STRONGLY_TYPED=5) if version == 10 else SimpleNamespace()
    flags = dict(VERSION_COMPATIBLE=12, TF32=7)
    if version == 10:
        flags.update(FP16=0, INT8=1, OBEY_PRECISION_CONSTRAINTS=10)
    return SimpleNamespace(NetworkDefinitionCreationFlag=creation, BuilderFlag=SimpleNamespace(**flags),
                           MemoryPoolType=SimpleNamespace(WORKSPACE=0),
                           HardwareCompatibilityLevel=SimpleNamespace(NONE=0, AMPERE_PLUS=1))


def _config():
    calls = []
    config = SimpleNamespace(builder_optimization_level=3, hardware_compatibility_level=0, calls=calls,
                             set_flag=lambda flag: calls.append(("flag", flag)),
                             clear_flag=lambda flag: calls.append(("clear", flag)),
                             set_memory_pool_limit=lambda pool, size: calls.append(("pool", pool, size)))
    return config


@pytest.mark.parametrize("version", [10, 11])
def test_the_builder_flags_use_only_names_this_tensorrt_has(version):
    trt = _api(version)
    assert trt_target.network_flags(trt) == (1 << 5 if version == 10 else 0)
    config = _config()
    record = trt_target.configure(trt, config, {"workspace": 2**30, "opt_level": 5, "compat": "both"})
    assert record == {"version_compatible": True, "hardware_compatibility": "ampere_plus", "tf32": False}
    # never FP16/INT8 (the ONNX file holds the types); TF32 off, so FP32 layers compute in FP32
    assert config.calls == [("clear", 7), ("pool", 0, 2**30), ("flag", 12)]
    assert (config.builder_optimization_level, config.hardware_compatibility_level) == (5, 1)
    plain = _config()
    assert trt_target.configure(trt, plain, {"compat": "none"}) == {"version_compatible": False,
                                                                   "hardware_compatibility": "none", "tf32": False}
    assert plain.calls == [("clear", 7)] and plain.hardware_compatibility_level == 0


def test_a_feature_this_tensorrt_lacks_is_exit_3_naming_it():
    trt = _api(11)
    trt.BuilderFlag = SimpleNamespace()
    with pytest.raises(BackendMissing, match="no BuilderFlag.VERSION_COMPATIBLE"):
        trt_target.configure(trt, _config(), {"compat": "version"})
    del trt.HardwareCompatibilityLevel
    with pytest.raises(BackendMissing, match="HardwareCompatibilityLevel.AMPERE_PLUS"):
        trt_target.configure(trt, _config(), {"compat": "hardware"})


# -- where an engine may run ------------------------------------------------------------------------------------

_RECORD = {"converter": "tensorrt", "version": "10.13.0.35", "gpu": "Orin", "compute_capability": "8.7",
           "version_compatible": False, "hardware_compatibility": "none",
           "rebuild": "edgeml convert build/m.fp16.onnx --to tensorrt -o build"}


def test_an_engine_runs_where_it_was_built():
    assert compatibility_problem(_RECORD, {"tensorrt": "10.13.0.35", "gpu": "Orin", "compute_capability": "8.7"}) is None
    assert compatibility_problem(None, {"tensorrt": "11.4.0.106", "compute_capability": "9.0"}) is None


def test_another_gpu_or_tensorrt_is_refused_with_the_rebuild_command():
    other_gpu = compatibility_problem(_RECORD, {"tensorrt": "10.13.0.35", "gpu": "H100", "compute_capability": "9.0"})
    assert other_gpu == ("it was built for compute 8.7 (Orin), this GPU (H100) is compute 9.0: an engine runs only "
                         "where it was built; rebuild it here: edgeml convert build/m.fp16.onnx --to tensorrt -o build")
    other_trt = compatibility_problem(_RECORD, {"tensorrt": "11.4.0.106", "gpu": "Orin", "compute_capability": "8.7"})
    assert other_trt.startswith("it was built with TensorRT 10.13.0.35, this machine has 11.4.0.106")
    assert other_trt.endswith(_RECORD["rebuild"])


def test_compatible_engines_run_on_later_tensorrt_and_ampere_plus_gpus():
    record = {**_RECORD, "version_compatible": True, "hardware_compatibility": "ampere_plus"}
    assert compatibility_problem(record, {"tensorrt": "10.14.1.0", "gpu": "H100", "compute_capability": "9.0"}) is None
    older = compatibility_problem(record, {"tensorrt": "10.8.0.43", "gpu": "T4", "compute_capability": "7.5"})
    assert "TensorRT 10.8.0.43 here is older than the 10.13.0.35" in older
    assert "built for Ampere or later GPUs, this one (T4) is compute 7.5" in older


def test_engine_records_are_read_from_the_manifest_entry():
    entry = {"build": {"conversion": [{"edge": "onnx -> tensorrt", **_RECORD}]}}
    assert trt_target.engine_record(entry)["compute_capability"] == "8.7"
    assert trt_target.engine_record({"build": {"conversion": [{"converter": "onnxruntime"}]}}) is None
    assert trt_target.engine_record(None) is None


# -- without TensorRT here ------------------------------------------------------------------------------------

_NO_TRT = importlib.util.find_spec("tensorrt") is None


@pytest.mark.skipif(not _NO_TRT, reason="TensorRT is installed here: the no-TensorRT path cannot be seen")
def test_without_tensorrt_the_onnx_is_kept_and_the_device_command_given(tmp_path):
    program = torch.export.export(tiny_net(), (torch.randn(2, 8),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=8)}})
    torch.export.save(program, tmp_path / "net.pt2")
    out = tmp_path / "build"
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "net.pt2"), "--to", "onnx,tensorrt", "-o", str(out)])
    assert result.exit_code == 3, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: TensorRT is not installed here (No module named 'tensorrt'): an engine must be built on "
                      f"the device that runs it; there, with pip install 'edgeml[tensorrt]', run: edgeml convert "
                      f"{out / 'net.onnx'} --to tensorrt -o {out}"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "net.onnx"]  # no engine, no temporary folder
    entries = json.loads((out / MANIFEST_NAME).read_text())["artifacts"]
    assert [(e["file"], e["check"]["status"]) for e in entries] == [("net.onnx", "passed")]
    assert entries[0]["inputs"][0]["ranges"] == {"batch": [1, 8, 8]}  # what the device builds its profile from
    # The command given is one edgeml takes: in the artifact's folder, from the listed artifact as it is (not
    # exported or checked again); on a device without TensorRT it stops at the same point.
    listed = (out / "net.onnx").read_bytes()
    again = CliRunner().invoke(main, errors[0].split("run: ", 1)[1].split()[1:])
    assert again.exit_code == 3 and "an engine must be built on the device" in again.output, again.output
    assert "building from net.onnx, checked and listed" in again.output
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "net.onnx"]
    assert (out / "net.onnx").read_bytes() == listed
    assert json.loads((out / MANIFEST_NAME).read_text())["artifacts"] == entries
    # A dim with no range is the user's to fix here, before the device and before the export: exit 2 naming
    # the flag, nothing written.
    with pytest.raises(InputError, match="dim 'batch' .* no range.*--shape batch=MIN..MAX"):
        edgeml.convert(tiny_net(), "tensorrt", tmp_path / "unbounded", inputs=["x:batchx8"])
    assert not (tmp_path / "unbounded").exists() or not list((tmp_path / "unbounded").iterdir())


@pytest.mark.skipif(not _NO_TRT, reason="TensorRT is installed here: the no-TensorRT path cannot be seen")
def test_every_parent_gets_its_command_and_what_tensorrt_cannot_build_is_skipped(tmp_path):
    """--int8 (dynamic) --fp16 --to onnx,tensorrt: the FP32 and FP16 artifacts are TensorRT's to build, each named
    in the one exit-3 line; dynamic INT8 (MatMulInteger) is not, and is skipped with the way to get one."""
    said = []
    with pytest.raises(BackendMissing) as info:
        edgeml.convert(tiny_net(), "onnx,tensorrt", tmp_path, inputs=["x:1..8x8"], int8=True, fp16=True,
                       progress=said.append)
    for parent in ("model.onnx", "model.fp16.onnx"):
        assert f"{tmp_path / parent} --to tensorrt -o {tmp_path}" in str(info.value)
    assert "model.int8.onnx --to tensorrt" not in str(info.value)
    assert any(line.startswith("no tensorrt from model.int8.onnx: TensorRT builds INT8 from symmetric Q/DQ only")
               for line in said), said
    assert any(line.startswith("not fusing for onnxruntime: --to tensorrt reads plain ONNX") for line in said)
    listed = [e["file"] for e in json.loads((tmp_path / MANIFEST_NAME).read_text())["artifacts"]]
    assert sorted(listed) == ["model.fp16.onnx", "model.int8.onnx", "model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*listed, MANIFEST_NAME])


def test_in_place_only_a_listed_artifact_is_built_on(tmp_path):
    edgeml.convert(tiny_net(), "onnx", tmp_path, inputs=["x:1..8x8"], name="m")
    with pytest.raises(InputError, match="would overwrite the source"):
        edgeml.convert(tmp_path / "m.onnx", "onnx,tensorrt", tmp_path)
    foreign = tmp_path / "other.onnx"
    foreign.write_bytes((tmp_path / "m.onnx").read_bytes())
    with pytest.raises(InputError, match=f"other.onnx is not an artifact its folder's {MANIFEST_NAME} lists"):
        edgeml.convert(foreign, "tensorrt", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME, "m.onnx", "other.onnx"]


def test_inspect_and_load_without_tensorrt_are_exit_3(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(BackendMissing):
        edgeml.inspect(engine)
    with pytest.raises(BackendMissing):
        edgeml.load(engine)
    assert backends.backend_for(engine).name == "tensorrt"


# -- with TensorRT and a GPU -----------------------------------------------------------------------------------


def _gpu_reason() -> str | None:
    if _NO_TRT:
        return "TensorRT is not installed (pip install 'edgeml[tensorrt]' on a machine with an NVIDIA GPU)"
    return None if trt_target.gpu_here() else "no CUDA GPU here"


@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
class TestOnTheGPU:
    def test_an_engine_is_built_checked_and_runs_like_its_onnx(self, tmp_path):
        result = edgeml.convert(tiny_net(), "onnx,tensorrt", tmp_path, inputs=["x:1..4..16x8"],
                                target_options={"tensorrt": {"timing_cache": str(tmp_path / "trt.cache")}})
        engine = tmp_path / "model.engine"
        assert [a.path.name for a in result.artifacts] == ["model.onnx", "model.engine"]
        entry = next(e for e in json.loads((tmp_path / MANIFEST_NAME).read_text())["artifacts"]
                     if e["file"] == "model.engine")
        record = trt_target.engine_record(entry)
        assert entry["check"]["status"] == "passed" and record["profile"] == {"x": [[1, 8], [4, 8], [16, 8]]}
        assert (tmp_path / "trt.cache").stat().st_size > 0
        x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
        with edgeml.load(engine) as trt_model, edgeml.load(tmp_path / "model.onnx") as onnx_model:
            assert trt_model.providers[0].startswith("TensorRT")
            np.testing.assert_allclose(trt_model(x), onnx_model(x), atol=1e-3, rtol=1e-3)
            np.testing.assert_allclose(trt_model(x[:2]), onnx_model(x[:2]), atol=1e-3, rtol=1e-3)  # another shape
            on_gpu = trt_model(torch.from_numpy(x).cuda())
            assert on_gpu.is_cuda and np.allclose(on_gpu.cpu().numpy(), onnx_model(x), atol=1e-3)
            with pytest.raises(InputError, match="outside the engine's profile"):
                trt_model(np.zeros((17, 8), np.float32))
        assert edgeml.inspect(engine)["inputs"][0]["ranges"] == {"batch": [1, 4, 16]}


# -- the engine runtime's own logic, with stand-ins for cuda-python and the execution context ------------------


class _CudaRuntime:
    """cuda-python's runtime module as the runtime calls it: every call returns (error, values...)."""

    def __init__(self, fail_malloc_above: int | None = None):
        self.live, self.destroyed, self.next, self.limit = set(), 0, 4096, fail_malloc_above

    def cudaSetDevice(self, index):
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamDestroy(self, stream):
        self.destroyed += 1
        return (0,)

    def cudaMalloc(self, nbytes):
        if self.limit is not None and nbytes > self.limit:
            return 2, None
        self.next += 4096
        self.live.add(self.next)
        return 0, self.next

    def cudaFree(self, pointer):
        self.live.remove(pointer)
        return (0,)

    def cudaGetErrorName(self, error):
        return 0, b"cudaErrorMemoryAllocation"


def _engine_runtime(cudart):
    """A TensorRTRuntime past its engine loading: one input with profile (1, 8)..(16, 8)."""
    import threading

    from edgeml.runtimes.tensorrt import TensorRTRuntime, _CudaPythonDevice

    runtime = object.__new__(TensorRTRuntime)
    shapes = []
    runtime._device = _CudaPythonDevice(cudart, 0)
    runtime._profile = {"x": [(1, 8), (4, 8), (16, 8)]}
    runtime._context = SimpleNamespace(set_input_shape=lambda name, shape: shapes.append(shape) or True)
    runtime._buffers, runtime._lock, runtime._engine, runtime._trt_runtime = {}, threading.Lock(), None, None
    return runtime, shapes


def test_engine_buffers_are_kept_and_grow_only_for_a_larger_shape():
    cudart = _CudaRuntime()
    runtime, _ = _engine_runtime(cudart)
    first = runtime._buffer("x", 4 * 8 * 4)
    assert runtime._buffer("x", 2 * 8 * 4) == first and cudart.live == {first}  # a smaller call reuses it
    grown = runtime._buffer("x", 16 * 8 * 4)
    assert grown != first and cudart.live == {grown}  # the old one is freed, not leaked
    runtime.close()
    runtime.close()  # twice, as a with block and an explicit close do
    assert cudart.live == set() and cudart.destroyed == 1


def test_engine_shapes_outside_the_profile_and_failed_cuda_calls_are_clean_errors():
    runtime, shapes = _engine_runtime(_CudaRuntime(fail_malloc_above=1024))
    runtime._set_shape("x", (16, 8))
    assert shapes == [(16, 8)]
    for shape in ((17, 8), (0, 8), (4, 9), (4,)):
        with pytest.raises(InputError, match=r"outside the engine's profile 1×8 \.\. 16×8; rebuild the engine"):
            runtime._set_shape("x", shape)
    assert shapes == [(16, 8)]
    with pytest.raises(InputError, match="CUDA call failed \\(cudaErrorMemoryAllocation\\); the GPU may be out of memory"):
        runtime._buffer("x", 4096)
