"""ONNX Runtime backend: CPU always; CUDA and TensorRT execution providers when onnxruntime-gpu has them."""

from __future__ import annotations

import itertools
import mmap
import os
from typing import Any, Mapping

import numpy as np

from ..errors import BackendMissing, InputError, first_line, no_such_file
from ..spec import TensorSpec
from .base import Runtime, check_threads, median_ms

#: onnxruntime's element type names that differ from edgeml's; the rest (int8, uint64, bfloat16...) are alike.
_ORT_NAMES = {"float": "float32", "double": "float64", "string": "str"}

#: edgeml device name -> ONNX Runtime execution providers, most preferred first.
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _spec(arg) -> TensorSpec:
    """``tensor(float)`` -> float32; a non-tensor type (``seq(...)``, ``map(...)``) keeps its name."""
    shape = tuple(d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else "?")
                  for d in (arg.shape or ()))
    kind = arg.type
    if kind.startswith("tensor(") and kind.endswith(")"):
        kind = _ORT_NAMES.get(kind[7:-1], kind[7:-1])
    return TensorSpec(arg.name, shape, kind)


def session_options(threads: int | None = None):
    """The session options edgeml uses everywhere (runtime, checks, bench), so numbers agree."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # fatal only: a failed call raises, and edgeml says why in one line
    if check_threads(threads):
        options.intra_op_num_threads = int(threads)
    return options


def providers_for(device: str, options: Mapping[str, Any] | None = None) -> list:
    """onnxruntime's providers for ``device``, most preferred first; ``options`` go to the first one (the GPU
    provider: ``device_id`` from ``cuda:N``, the rest as given, e.g. ``trt_fp16_enable``)."""
    import onnxruntime as ort

    kind, colon, index = str(device).partition(":")
    if kind not in _PROVIDERS or (colon and not (index.isascii() and index.isdigit())):
        raise InputError(f"unknown device {device!r} for onnxruntime; use cpu, cuda[:N] or tensorrt[:N]")
    wanted = _PROVIDERS[kind]
    options = dict(options or {})
    if kind == "cpu":
        if options:
            raise InputError(f"runtime options ({', '.join(options)}) are options of onnxruntime's CUDA and TensorRT "
                             "providers; use them with --device cuda or tensorrt, or drop them")
        return list(wanted)
    both = [name for name in ("onnxruntime", "onnxruntime-gpu") if _installed(name)]
    if len(both) == 2:
        raise BackendMissing("onnxruntime and onnxruntime-gpu are both installed: they provide one module and break "
                             "each other's GPU providers; pip uninstall -y onnxruntime onnxruntime-gpu, then pip "
                             "install onnxruntime-gpu")
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise BackendMissing(
            f"device {device!r} needs onnxruntime's {wanted[0]}, which this onnxruntime {ort.__version__} lacks "
            f"(it has {', '.join(available)}); install onnxruntime-gpu instead of onnxruntime, or use --device cpu"
        )
    device_id = {"device_id": int(index)} if index else {}
    first, *rest = wanted
    return [(first, {**device_id, **options}), *((p, device_id) if device_id and p != "CPUExecutionProvider" else p
                                                 for p in rest)]


#: Graph optimizers that crash onnxruntime 1.32 (a segfault, not an error) on some float16 graphs, e.g. an
#: nn.TransformerEncoder's FP16 export: the x86 NCHWc layout pass. Never applied to a graph with float16 weights.
FLOAT16_UNSAFE = ("NchwcTransformer",)


def _holds_float16(model: str | bytes) -> bool:
    """Whether an ONNX model (a file, or serialized) has float16 initializers; an ORT format file is not read."""
    if isinstance(model, bytes):
        return _float16_weights(model)
    if model.lower().endswith(".ort") or not os.path.getsize(model):
        return False
    # Mapped, not read: the scan touches the fields' headers only, never the weights' pages it skips.
    with open(model, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return _float16_weights(mapped)


def _float16_weights(serialized: bytes | mmap.mmap) -> bool:
    """Read from the protobuf wire format itself (the runtime path imports no onnx): ModelProto.graph (field
    7) -> GraphProto.initializer (5) -> TensorProto.data_type (2) == FLOAT16 (10). Not ONNX: False, and
    onnxruntime says what is wrong with it."""
    try:
        for graph, start, end in _fields(serialized, 0, len(serialized)):
            if graph == 7 and end is not None:
                for initializer, i_start, i_end in _fields(serialized, start, end):
                    if initializer == 5 and i_end is not None and any(
                            number == 2 and stop is None and value == 10
                            for number, value, stop in _fields(serialized, i_start, i_end)):
                        return True
    except (IndexError, ValueError):
        return False
    return False


def _fields(data: bytes | mmap.mmap, start: int, end: int):
    """The protobuf fields between ``start`` and ``end``: (number, value, None) for a varint, (number, first
    byte, end) for a length-delimited one; fixed-size ones are skipped."""
    position = start
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
            yield number, value, None
        elif wire == 2:
            length, position = _varint(data, position)
            if position + length > end:
                raise ValueError("a field runs past its message")
            yield number, position, position + length
            position += length
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")


def _varint(data: bytes | mmap.mmap, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _installed(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def check_providers(device: str, asked: list, used: list[str]) -> None:
    """onnxruntime falls back to the CPU, with a warning at most, when a GPU provider cannot start (CUDA or
    cuDNN libraries missing or of another version): a run asked for on ``cuda`` or ``tensorrt`` must not
    measure or check the CPU instead."""
    first = asked[0][0] if isinstance(asked[0], tuple) else asked[0]
    if first != "CPUExecutionProvider" and first not in used:
        import onnxruntime as ort

        raise BackendMissing(
            f"device {device!r} asked for onnxruntime's {first}, but the session runs on {', '.join(used)}: "
            f"onnxruntime {ort.__version__} could not start {first} (CUDA or cuDNN libraries missing or of another "
            "version); install the onnxruntime-gpu build matching this machine's CUDA version, or use --device cpu"
        )


class OnnxRuntime(Runtime):
    backend = "onnxruntime"
    tools = ("onnxruntime", "onnxruntime-gpu")

    def __init__(self, path: str | os.PathLike | bytes, device: str = "cpu", threads: int | None = None,
                 disabled_optimizers: list[str] | None = None, provider_options: Mapping[str, Any] | None = None):
        """``path``: an ONNX (or ORT format) file, or a serialized model in memory. ``disabled_optimizers``:
        graph optimizers onnxruntime must not apply (to compute as a file saved without them does).
        ``provider_options``: options of the GPU provider ``device`` names (``providers_for``)."""
        import onnxruntime as ort

        if not isinstance(path, bytes):
            path = os.fspath(path)
            if not os.path.isfile(path):
                raise no_such_file(path)
        what = "the in-memory ONNX model" if isinstance(path, bytes) else path
        options, providers = session_options(threads), providers_for(device, provider_options)
        if _holds_float16(path):
            disabled_optimizers = sorted({*(disabled_optimizers or ()), *FLOAT16_UNSAFE})
        try:
            self._session = ort.InferenceSession(path, options, providers=providers,
                                                 disabled_optimizers=disabled_optimizers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            reason = first_line(exc)
            unsupported = "NOT_IMPLEMENTED" in reason or "not currently registered or supported" in reason
            hint = ("an op or type there has no kernel in this onnxruntime: try another opset or dtype" if unsupported
                    else "the file is newer than this onnxruntime reads: pip install -U onnxruntime"
                    if "IR version" in reason else
                    f"check the provider options ({', '.join(provider_options)}) against onnxruntime's documentation"
                    if provider_options else "the file may be truncated or corrupt: re-export it")
            raise InputError(f"onnxruntime {ort.__version__} cannot load {what} ({reason}); {hint}") from exc
        self._providers = self._session.get_providers()
        check_providers(device, providers, self._providers)
        super().__init__(
            [_spec(a) for a in self._session.get_inputs()],
            [_spec(a) for a in self._session.get_outputs()],
            self._session.get_modelmeta().custom_metadata_map,
            device=device,
            path=None if isinstance(path, bytes) else path,
            threads=threads,
        )
        self._session_run = self._session.run

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session_run(self._output_names, feeds)
        except Exception as exc:  # noqa: BLE001 - e.g. an index out of range inside the model
            raise InputError(f"onnxruntime could not run {self.what} on these inputs ({first_line(exc)})") from exc

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, most preferred first (also after ``close``)."""
        return list(self._providers)

    def bench_call(self, batches: list[dict]):
        kind, _, index = self.device.partition(":")
        return super().bench_call(batches) if kind == "cpu" else self.bound_call(batches, "cuda", int(index or 0))

    def bound_call(self, batches: list[dict], device_type: str, device_id: int = 0):
        """``bench_call`` through onnxruntime's IOBinding: each batch's inputs copied to ``device_type`` once,
        outputs left where the session computes them; a call returns its binding."""
        import onnxruntime as ort

        def place(feeds: dict) -> list:
            return [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(feeds[c.name]), device_type, device_id)
                    for c in self._checks]

        bindings = []
        for feeds in batches:
            binding = self._session.io_binding()
            for check, value in zip(self._checks, place({c.name: c(feeds[c.name]) for c in self._checks})):
                binding.bind_ortvalue_input(check.name, value)
            for name in self._output_names:
                binding.bind_output(name, device_type, device_id)
            bindings.append(binding)
        following = itertools.cycle(bindings).__next__
        run = self._session.run_with_iobinding

        def compute(binding):
            run(binding)
            binding.synchronize_outputs()
            return binding

        copies = {"host_to_device_ms": median_ms(lambda: place(batches[0])),
                  "device_to_host_ms": median_ms(compute(bindings[0]).copy_outputs_to_cpu)}
        return (lambda: compute(following())), copies

    def close(self) -> None:
        super().close()
        self._session = self._session_run = None
