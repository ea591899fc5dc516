"""ONNX Runtime backend: CPU always; CUDA and TensorRT execution providers when onnxruntime-gpu has them."""

from __future__ import annotations

import os

import numpy as np

from ..errors import BackendMissing, InputError, first_line, no_such_file
from ..spec import TensorSpec
from .base import Runtime, check_threads

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


def providers_for(device: str) -> list:
    import onnxruntime as ort

    kind, colon, index = str(device).partition(":")
    if kind not in _PROVIDERS or (colon and not (index.isascii() and index.isdigit())):
        raise InputError(f"unknown device {device!r} for onnxruntime; use cpu, cuda[:N] or tensorrt[:N]")
    wanted = _PROVIDERS[kind]
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise BackendMissing(
            f"device {device!r} needs onnxruntime's {wanted[0]}, which this onnxruntime {ort.__version__} lacks "
            f"(it has {', '.join(available)}); install onnxruntime-gpu instead of onnxruntime, or use --device cpu"
        )
    if index:
        return [(p, {"device_id": int(index)}) if p != "CPUExecutionProvider" else p for p in wanted]
    return list(wanted)


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

    def __init__(self, path: str | os.PathLike | bytes, device: str = "cpu", threads: int | None = None,
                 disabled_optimizers: list[str] | None = None):
        """``path``: an ONNX (or ORT format) file, or a serialized model in memory. ``disabled_optimizers``:
        graph optimizers onnxruntime must not apply (to compute as a file saved without them does)."""
        import onnxruntime as ort

        if not isinstance(path, bytes):
            path = os.fspath(path)
            if not os.path.isfile(path):
                raise no_such_file(path)
        what = "the in-memory ONNX model" if isinstance(path, bytes) else path
        options, providers = session_options(threads), providers_for(device)
        try:
            self._session = ort.InferenceSession(path, options, providers=providers,
                                                 disabled_optimizers=disabled_optimizers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            reason = first_line(exc)
            unsupported = "NOT_IMPLEMENTED" in reason or "not currently registered or supported" in reason
            hint = ("an op or type there has no kernel in this onnxruntime: try another opset or dtype" if unsupported
                    else "the file is newer than this onnxruntime reads: pip install -U onnxruntime"
                    if "IR version" in reason else "the file may be truncated or corrupt: re-export it")
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

    def close(self) -> None:
        super().close()
        self._session = self._session_run = None
