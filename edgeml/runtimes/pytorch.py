"""PyTorch backend: the reference every exported artifact is checked against, on CPU or CUDA.

It runs the source module eagerly under ``torch.inference_mode()``, which is also the baseline that
users run today and that the benchmarks compare against.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import BackendMissing, InputError, require
from ..spec import TensorSpec, spec_of_array
from .base import Runtime, check_threads


def flatten_outputs(result: Any) -> list:
    """A module's result (tensor, tuple, list or dict, nested) as a flat list of tensors, in order."""
    if isinstance(result, dict):
        return [t for v in result.values() for t in flatten_outputs(v)]
    if isinstance(result, (list, tuple)):
        return [t for v in result for t in flatten_outputs(v)]
    return [result]


def output_names_for(result: Any) -> list[str]:
    """Names for a module's outputs: dict keys, else ``output`` or ``output_0``, ``output_1``..."""
    if isinstance(result, dict) and all(not isinstance(v, (dict, list, tuple)) for v in result.values()):
        return [str(k) for k in result]
    flat = flatten_outputs(result)
    return ["output"] if len(flat) == 1 else [f"output_{i}" for i in range(len(flat))]


def resolve_device(device: str) -> str:
    torch = require("torch", "torch")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendMissing(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU here; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InputError(f"unknown device {device!r} for torch; use cpu or cuda[:N]")
    return device


class TorchRuntime(Runtime):
    """Runs a callable already placed on ``device`` (see ``place_on``)."""

    backend = "torch"

    def __init__(self, module: Callable, inputs: list[TensorSpec], device: str = "cpu", path: str | None = None,
                 threads: int | None = None):
        torch = require("torch", "torch")
        self._torch = torch
        device = resolve_device(device)
        if check_threads(threads):
            torch.set_num_threads(int(threads))  # process-wide in torch: there is no per-module setting
        self._module = module
        self._device = torch.device(device)
        # One dry run on zeros fixes the output specs (names, dtypes, ranks).
        probe = {s.name: np.zeros(s.concrete_shape(batch=2, other=2), dtype=s.np_dtype) for s in inputs}
        result = self._forward([probe[s.name] for s in inputs])
        flat = [t.detach().cpu().numpy() for t in flatten_outputs(result)]
        outputs = [spec_of_array(n, a) for n, a in zip(output_names_for(result), flat)]
        batched = [s.with_batch("batch") if inputs and inputs[0].is_dynamic else s for s in outputs]
        super().__init__(inputs, batched, device=device, path=path, threads=threads)

    def _forward(self, arrays: list[np.ndarray]):
        torch = self._torch
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self._device) for a in arrays]
        with torch.inference_mode():
            return self._module(*tensors)

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._forward([feeds[n] for n in self.input_names])
        if self._device.type == "cuda":
            self._torch.cuda.synchronize(self._device)
        return [t.detach().cpu().numpy() for t in flatten_outputs(result)]


def place_on(model: Any, device: str):
    """A callable running ``model`` (nn.Module, TorchScript or ExportedProgram) on ``device``."""
    torch = require("torch", "torch")
    device = resolve_device(device)
    if isinstance(model, torch.export.ExportedProgram):
        if device != "cpu":
            from torch.export.passes import move_to_device_pass

            model = move_to_device_pass(model, device)
        return model.module()
    return model.to(device) if device != "cpu" else model
