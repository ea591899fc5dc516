"""TensorRT runtime: a ``.engine`` run on this machine's GPU behind the Runtime contract.

An engine runs only on the GPU compute capability and the TensorRT version it was built with (unless built
compatible): the record its manifest holds is compared with this machine before anything is deserialized, and
a refusal says how to rebuild it here, never ``'NoneType' object has no attribute``. Device buffers are kept
between calls (reallocated only for a larger shape); numpy arrays go in and come out by default, copied through
PyTorch CUDA tensors when PyTorch is here, else through cuda-python; CUDA torch tensors go in and come out
without copies. Written against TensorRT 10/11's documented API; not yet run on a GPU in this project's CI."""

from __future__ import annotations

import itertools
import json
import shlex
import threading
from pathlib import Path

import numpy as np

from ..errors import BackendMissing, InputError, first_line
from ..spec import DimRange, TensorSpec, format_shape
from .base import Runtime, median_ms

#: TensorRT DataType names -> edgeml dtypes.
_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
           "INT64": "int64", "BOOL": "bool", "UINT8": "uint8", "FP8": "float8", "INT4": "int4", "FP4": "float4"}


#: The prefix of the network name edgeml gives an engine: what the engine says of itself (precision, the
#: ONNX inputs' dim names and ranges, the ONNX metadata), read back by inspect and the runtime. A plan file
#: keeps its network's name and nothing else of ours.
NAME_PREFIX = "edgeml:"


def rebuild_command(onnx_file, options: dict | None = None) -> str:
    """The edgeml command that builds the engine of ``onnx_file`` with ``options``, to run on the device: in the
    artifact's own folder, from the artifact as its manifest lists it (``pipeline._listed_parent``)."""
    onnx_file = Path(onnx_file)
    options = options or {}
    words = ["edgeml", "convert", str(onnx_file), "--to", "tensorrt", "-o", str(onnx_file.parent)]
    if options.get("workspace"):
        words += ["--workspace", f"{options['workspace'] // 1024**2}MiB"]
    if options.get("timing_cache"):
        words += ["--timing-cache", str(options["timing_cache"])]
    if options.get("opt_level") is not None:
        words += ["--opt-level", str(options["opt_level"])]
    if options.get("compat", "none") != "none":
        words += ["--trt-compat", options["compat"]]
    return shlex.join(words)


def tensorrt(fix: str):
    """The tensorrt module, or exit 3 saying that it is missing and ``fix``."""
    try:
        import tensorrt as trt
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError for a missing libnvinfer
        raise BackendMissing(f"TensorRT is not installed here ({first_line(exc)}): {fix}") from exc
    return trt


def gpu_here(index: int = 0) -> dict | None:
    """This machine's CUDA GPU ``index`` ({"gpu": name, "compute_capability": "8.7"}), from PyTorch when it has
    CUDA, else from cuda-python; None when neither finds one."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available() and index < torch.cuda.device_count():
        props = torch.cuda.get_device_properties(index)
        return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}
    cudart = cuda_runtime()
    if cudart is None:
        return None
    err, props = cudart.cudaGetDeviceProperties(index)
    if int(err) != 0:
        return None
    name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}"}


def cuda_runtime():
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6), or None."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            return None
    return runtime


def logger(trt):
    """A TensorRT logger that keeps the errors, so that a failed build or load says why in one line."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg).strip())

    return Logger()


def engine_record(entry: dict | None) -> dict | None:
    """The TensorRT build record in an engine's manifest entry (the last conversion step), or None."""
    steps = ((entry or {}).get("build") or {}).get("conversion") or []
    return next((step for step in reversed(steps) if step.get("converter") == "tensorrt"), None)


def own_description(engine) -> dict:
    """What edgeml wrote in the engine's network name (precision, inputs, metadata), or {} for another engine."""
    name = getattr(engine, "name", "") or ""
    if not name.startswith(NAME_PREFIX):
        return {}
    try:
        found = json.loads(name[len(NAME_PREFIX):])
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in str(text).split(".") if part.isdigit())


def compatibility_problem(record: dict | None, here: dict) -> str | None:
    """Why an engine built as ``record`` says (its manifest's build record) cannot run ``here`` ({"tensorrt":
    version, "gpu": name, "compute_capability": "8.7"}), with the command that rebuilds it; None when it can,
    or when there is no record to judge by (then deserializing decides). A version-compatible engine runs on
    the same or a later TensorRT; a hardware-compatible (Ampere+) one on compute 8.0 or later."""
    if not record:
        return None
    problems = []
    built, have = record.get("version", "?"), here.get("tensorrt", "?")
    if record.get("version_compatible"):
        if _version(have) < _version(built):
            problems.append(f"TensorRT {have} here is older than the {built} it was built with")
    elif built != have:
        problems.append(f"it was built with TensorRT {built}, this machine has {have}")
    cc, cc_here = record.get("compute_capability", "?"), here.get("compute_capability", "?")
    if record.get("hardware_compatibility") == "ampere_plus":
        if _version(cc_here) < (8, 0):
            problems.append(f"it was built for Ampere or later GPUs, this one ({here.get('gpu', '?')}) is compute {cc_here}")
    elif cc != cc_here:
        problems.append(f"it was built for compute {cc} ({record.get('gpu', '?')}), this GPU ({here.get('gpu', '?')}) "
                        f"is compute {cc_here}")
    if not problems:
        return None
    return (f"{'; '.join(problems)}: an engine runs only where it was built; rebuild it here: "
            f"{record.get('rebuild', 'edgeml convert MODEL.onnx --to tensorrt')}")


class _TorchDevice:
    """Device memory, copies and the stream through PyTorch's CUDA tensors."""

    def __init__(self, torch, index: int):
        self.torch, self.device = torch, torch.device("cuda", index)

    def alloc(self, nbytes: int):
        buffer = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)
        return buffer, buffer.data_ptr()

    def stream(self) -> int:
        return self.torch.cuda.current_stream(self.device).cuda_stream

    def to_device(self, buffer, array: np.ndarray) -> None:
        if array.nbytes:
            buffer[:array.nbytes].copy_(self.torch.from_numpy(array.reshape(-1).view(np.uint8)))

    def to_host(self, array: np.ndarray, buffer) -> None:
        if array.nbytes:  # a copy to pageable host memory waits for the stream's work before it
            self.torch.from_numpy(array.reshape(-1).view(np.uint8)).copy_(buffer[:array.nbytes])

    def synchronize(self) -> None:
        self.torch.cuda.current_stream(self.device).synchronize()

    def close(self) -> None:
        pass


class _CudaPythonDevice:
    """Device memory, copies and a stream of its own through cuda-python (``cuda.bindings.runtime``)."""

    def __init__(self, cudart, index: int):
        self.cudart = cudart
        self._call(cudart.cudaSetDevice(index))
        self._stream = self._call(cudart.cudaStreamCreate())
        self._owned: list[int] = []

    def _call(self, result):
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            name = self.cudart.cudaGetErrorName(err)[1]
            raise InputError(f"CUDA call failed ({name.decode() if isinstance(name, bytes) else name}); the GPU may be "
                             "out of memory or in an error state")
        return values[0] if len(values) == 1 else None

    def alloc(self, nbytes: int):
        pointer = int(self._call(self.cudart.cudaMalloc(max(nbytes, 1))))
        self._owned.append(pointer)
        return pointer, pointer

    def free(self, pointer: int) -> None:
        self._owned.remove(pointer)
        self._call(self.cudart.cudaFree(pointer))

    def stream(self) -> int:
        return int(self._stream)

    def _copy(self, dst: int, src: int, nbytes: int, kind) -> None:
        if nbytes:
            self._call(self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream))

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        self._copy(pointer, array.ctypes.data, array.nbytes, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
        self.synchronize()  # the host array may go away once this returns

    def to_host(self, array: np.ndarray, pointer: int) -> None:
        self._copy(array.ctypes.data, pointer, array.nbytes, self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        self.synchronize()

    def synchronize(self) -> None:
        self._call(self.cudart.cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        for pointer in list(self._owned):
            self.free(pointer)
        self._call(self.cudart.cudaStreamDestroy(self._stream))


def _is_cuda_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and bool(getattr(value, "is_cuda", False))


def _device_index(device: str) -> int:
    kind, colon, index = str(device).partition(":")
    if kind not in ("cuda", "tensorrt") or (colon and not (index.isascii() and index.isdigit())):
        raise InputError(f"unknown device {device!r} for a TensorRT engine; use cuda or cuda:N (an engine runs on "
                         "the NVIDIA GPU it was built for)")
    return int(index) if colon else 0


class TensorRTRuntime(Runtime):
    backend = "tensorrt"
    tools = ("tensorrt", "cuda-python")

    def __init__(self, path, device: str = "cuda", threads: int | None = None):
        from ..manifest import manifest_entry
        from ..readable import regular_file

        path = regular_file(path, "TensorRT engine")
        index = _device_index(device)
        record = engine_record(manifest_entry(path))
        command = (record or {}).get("rebuild") or rebuild_command(path.with_suffix(".onnx"))
        trt = tensorrt(f"install it on the device {path.name} was built for (pip install 'edgeml[tensorrt]'), or "
                       f"rebuild the engine where it runs: {command}")
        here = gpu_here(index)
        if here is None:
            raise BackendMissing(f"{path.name} runs on an NVIDIA GPU, and there is no CUDA GPU {index} here (neither "
                                 "PyTorch with CUDA nor cuda-python finds one)")
        here["tensorrt"] = trt.__version__
        problem = compatibility_problem(record, here)
        if problem:
            raise BackendMissing(f"{path.name} cannot run here: {problem}")
        self._device = self._open_device(index)  # first: the engine is deserialized onto the current device
        try:
            self._open_engine(trt, path, record, command)
        except BaseException:
            self._device.close()  # its stream and buffers, when the engine cannot be used
            raise
        self.tensorrt_version, self.gpu = trt.__version__, here
        own = own_description(self._engine)
        self.precision = own.get("precision", "?")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._profile = {n: [tuple(s) for s in self._engine.get_tensor_profile_shape(n, 0)] for n in names if is_input[n]}
        given = {s["name"]: TensorSpec.from_dict(s) for s in own.get("inputs", []) + own.get("outputs", [])}
        inputs = [self._spec(trt, n, given.get(n)) for n in names if is_input[n]]
        outputs = [self._spec(trt, n, given.get(n)) for n in names if not is_input[n]]
        self._buffers: dict[str, tuple[object, int, int]] = {}  # name -> (buffer, pointer, capacity in bytes)
        self._lock = threading.Lock()
        super().__init__(inputs, outputs, own.get("metadata", {}), device=device, path=str(path), threads=threads)

    def _open_engine(self, trt, path: Path, record: dict | None, command: str) -> None:
        """Deserialize the engine and make its execution context; either failing is exit 3 with the reason."""
        self._log = logger(trt)
        self._trt_runtime = trt.Runtime(self._log)
        if (record or {}).get("version_compatible"):
            # A version-compatible plan embeds its lean runtime, code that runs on load: allowed only for an
            # engine its manifest says edgeml built so.
            self._trt_runtime.engine_host_code_allowed = True
        self._engine = self._trt_runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            reason = self._log.errors[-1] if self._log.errors else "the file may be truncated or not an engine"
            raise BackendMissing(f"TensorRT {trt.__version__} cannot load {path.name} ({first_line(reason)}): an "
                                 f"engine runs only on the GPU and TensorRT it was built with; rebuild it here: {command}")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendMissing(f"TensorRT could not create an execution context for {path.name} "
                                 f"({first_line(self._log.errors[-1]) if self._log.errors else 'out of GPU memory?'})")

    def _spec(self, trt, name: str, given: TensorSpec | None) -> TensorSpec:
        """A tensor's spec: the ONNX file's (dim names and ranges) where edgeml built the engine and the ranks
        agree, else the engine's shape with its profile's ranges under ``<name>_dim<axis>``."""
        dtype = _DTYPES.get(getattr(self._engine.get_tensor_dtype(name), "name", ""), "?")
        shape = tuple(self._engine.get_tensor_shape(name))
        if given is not None and len(given.shape) == len(shape):
            return TensorSpec(name, given.shape, dtype, given.ranges)
        dims, ranges = [], {}
        for axis, size in enumerate(shape):
            if size >= 0:
                dims.append(int(size))
                continue
            dim = f"{name}_dim{axis}"
            dims.append(dim)
            if name in self._profile:
                low, opt, high = (self._profile[name][k][axis] for k in range(3))
                if low < high:
                    ranges[dim] = DimRange(low, opt, high)
        return TensorSpec(name, tuple(dims), dtype, ranges)

    @staticmethod
    def _open_device(index: int):
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None and torch.cuda.is_available():
            torch.cuda.set_device(index)
            return _TorchDevice(torch, index)
        cudart = cuda_runtime()
        if cudart is None:
            raise BackendMissing("the TensorRT runtime copies arrays through PyTorch with CUDA or cuda-python, and "
                                 "neither is here; pip install cuda-python")
        return _CudaPythonDevice(cudart, index)

    # -- running --------------------------------------------------------------------------------------------
    def run(self, feeds):
        """Named inputs as numpy arrays (outputs come back as numpy) or as CUDA torch tensors (outputs come back
        as CUDA tensors, nothing copied)."""
        if isinstance(feeds, dict) and any(_is_cuda_tensor(v) for v in feeds.values()):
            self._raise_names(feeds)
            if self._context is None:
                self._closed(feeds)
            return dict(zip(self._output_names, self._run_tensors(feeds)))
        return super().run(feeds)

    def __call__(self, *arrays):
        if any(_is_cuda_tensor(a) for a in arrays):
            if self._context is None:
                self._closed(arrays)
            if len(arrays) != len(self.inputs):
                self._raise_count(arrays)
            results = self._run_tensors(dict(zip(self.input_names, arrays)))
            return results[0] if len(results) == 1 else tuple(results)
        return super().__call__(*arrays)

    def _set_shape(self, name: str, shape: tuple) -> None:
        """Tell the context an input's shape, refusing one outside the engine's profile with its range."""
        low, _, high = self._profile[name]
        if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
            raise InputError(f"input {name!r} has shape {format_shape(shape)}, outside the engine's profile "
                             f"{format_shape(low)} .. {format_shape(high)}; rebuild the engine with a wider range "
                             "(--shape DIM=MIN..MAX)")
        if not self._context.set_input_shape(name, shape):
            raise InputError(f"TensorRT refused shape {format_shape(shape)} for input {name!r}")

    def _output_shapes(self) -> list[tuple[int, ...]]:
        shapes = [tuple(self._context.get_tensor_shape(n)) for n in self._output_names]
        for name, shape in zip(self._output_names, shapes):
            if any(s < 0 for s in shape):
                raise InputError(f"output {name!r} has a data-dependent shape ({format_shape(shape)}), which this "
                                 "runtime does not size; run the ONNX artifact instead")
        return shapes

    def _buffer(self, name: str, nbytes: int) -> int:
        """The input's or output's device buffer, kept between calls and replaced only by a larger one."""
        held = self._buffers.get(name)
        if held is None or held[2] < nbytes:
            if held is not None and isinstance(self._device, _CudaPythonDevice):
                self._device.free(held[1])
            buffer, pointer = self._device.alloc(nbytes)
            held = self._buffers[name] = (buffer, pointer, max(nbytes, 1))
        return held[1]

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._device.stream()):
            reason = self._log.errors[-1] if self._log.errors else "TensorRT gave no reason"
            raise InputError(f"TensorRT could not run {self.what} on these inputs ({first_line(reason)})")

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            for name, array in feeds.items():
                array = np.ascontiguousarray(array)
                self._set_shape(name, array.shape)
                pointer = self._buffer(name, array.nbytes)
                self._device.to_device(self._buffers[name][0], array)
                self._context.set_tensor_address(name, pointer)
            results = []
            for spec, shape in zip(self.outputs, self._output_shapes()):
                result = np.empty(shape, dtype=spec.np_dtype)
                self._context.set_tensor_address(spec.name, self._buffer(spec.name, result.nbytes))
                results.append(result)
            self._execute()
            for spec, result in zip(self.outputs, results):
                self._device.to_host(result, self._buffers[spec.name][0])
            return results

    def _run_tensors(self, feeds: dict) -> list:
        """CUDA torch tensors in, fresh CUDA torch tensors out (the engine writes into them): no copies."""
        import torch

        if not isinstance(self._device, _TorchDevice):
            raise InputError("CUDA tensors need PyTorch with CUDA for the runtime's buffers; pass numpy arrays")
        kept = []
        with self._lock:
            for check in self._checks:
                value = feeds[check.name]
                if not _is_cuda_tensor(value):
                    value = torch.as_tensor(np.asarray(check(value)), device=self._device.device)
                if str(value.dtype).removeprefix("torch.") != check.spec.dtype:
                    raise InputError(f"input {check.name!r} expects dtype {check.spec.dtype}, got {value.dtype}; "
                                     f"convert it with .to(torch.{check.spec.dtype})")
                value = value.contiguous()
                kept.append(value)
                self._set_shape(check.name, tuple(value.shape))
                self._context.set_tensor_address(check.name, value.data_ptr())
            results = []
            for spec, shape in zip(self.outputs, self._output_shapes()):
                result = torch.empty(shape, dtype=getattr(torch, spec.dtype), device=self._device.device)
                self._context.set_tensor_address(spec.name, result.data_ptr())
                results.append(result)
            self._execute()
            self._device.synchronize()
        return results

    def bench_call(self, batches: list[dict]):
        """With PyTorch's CUDA buffers: each batch's inputs on the GPU once, the engine's outputs left there
        (``_run_tensors`` waits for the stream); through cuda-python, ``run``, its copies included."""
        if not isinstance(self._device, _TorchDevice):
            return super().bench_call(batches)
        torch, device = self._device.torch, self._device.device

        def place(feeds: dict) -> dict:
            placed = {c.name: torch.as_tensor(np.asarray(c(feeds[c.name])), device=device) for c in self._checks}
            self._device.synchronize()
            return placed

        placed = [place(feeds) for feeds in batches]
        following = itertools.cycle(placed).__next__
        outputs = self._run_tensors(placed[0])
        copies = {"host_to_device_ms": median_ms(lambda: place(batches[0])),
                  "device_to_host_ms": median_ms(lambda: [t.cpu() for t in outputs])}
        return (lambda: self._run_tensors(following())), copies

    @property
    def providers(self) -> list[str]:
        """What runs the engine: TensorRT's version and the GPU."""
        return [f"TensorRT {self.tensorrt_version} on {self.gpu['gpu']} (compute {self.gpu['compute_capability']})"]

    def close(self) -> None:
        super().close()
        with self._lock:
            self._buffers.clear()
            if self._device is not None:
                self._device.close()
            self._device = self._context = self._engine = self._trt_runtime = None

