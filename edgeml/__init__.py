"""edgeml: PyTorch and scikit-learn models to checked, benchmarked edge artifacts.

The public API is imported lazily so that ``import edgeml`` and ``edgeml.load`` on an ONNX file pull in
no torch, scikit-learn or converter: apps embedding the runtime stay light.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

_API = {
    "convert": ("edgeml.pipeline", "convert"),
    "load": ("edgeml.runtimes", "load"),
    "bench": ("edgeml.latency.runner", "bench"),
    "bench_sweep": ("edgeml.latency.runner", "bench_sweep"),
    "compare": ("edgeml.validate", "compare"),
    "inspect": ("edgeml.backends", "inspect"),
    "verify": ("edgeml.verification", "verify"),
    "Int8Options": ("edgeml.calibration.int8", "Int8Options"),
    "ImageOptions": ("edgeml.datafiles", "ImageOptions"),
    "Runtime": ("edgeml.runtimes.base", "Runtime"),
    "TensorSpec": ("edgeml.spec", "TensorSpec"),
    "Classified": ("edgeml.text", "Classified"),
    "EdgeMLError": ("edgeml.errors", "EdgeMLError"),
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeml' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
