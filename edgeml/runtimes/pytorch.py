"""PyTorch backend: the reference every exported artifact is checked against, on CPU or CUDA.

It runs the source module eagerly under ``torch.inference_mode()``, which is also the baseline that
users run today and that the benchmarks compare against.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np

from ..errors import BackendMissing, InputError, first_line, require
from ..spec import TensorSpec, check_input_bytes, spec_of_array
from .base import Runtime, check_threads, median_ms


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
    kind, colon, index = str(device).partition(":")
    if not (device == "cpu" or kind == "cuda" and (not colon or index.isascii() and index.isdigit())):
        raise InputError(f"unknown device {device!r} for torch; use cpu or cuda[:N]")
    if kind == "cuda" and not torch.cuda.is_available():
        raise BackendMissing(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU here; use --device cpu")
    return device


class TorchRuntime(Runtime):
    """Runs a callable already placed on ``device`` (see ``place_on``)."""

    backend = "torch"
    tools = ("torch",)

    def __init__(self, module: Callable, inputs: list[TensorSpec], device: str = "cpu", path: str | None = None,
                 threads: int | None = None):
        torch = require("torch", "torch")
        self._torch = torch
        device = resolve_device(device)
        if check_threads(threads):
            torch.set_num_threads(int(threads))  # process-wide in torch: there is no per-module setting
        self._module = module
        self._device = torch.device(device)
        self.path, self.inputs = path, list(inputs)  # set early: the probe's errors name them
        # One dry run on zeros fixes the output specs (names, dtypes, ranks).
        check_input_bytes(inputs, 2, 2, what=f"the probe inputs of {self.what}")
        result = self._forward([np.zeros(s.concrete_shape(batch=2, other=2), dtype=s.np_dtype) for s in inputs])
        flat = self._arrays(result)
        outputs = [spec_of_array(n, a) for n, a in zip(output_names_for(result), flat)]
        batched = [s.with_batch("batch") if inputs and inputs[0].is_dynamic else s for s in outputs]
        super().__init__(inputs, batched, device=device, path=path, threads=threads)

    def _forward(self, arrays: list[np.ndarray]):
        torch = self._torch
        try:
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self._device) for a in arrays]
            with torch.inference_mode():
                result = self._module(*tensors)
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            return result
        except Exception as exc:  # noqa: BLE001 - the user's module failed on these inputs
            raise InputError(f"torch could not run {self.what} on inputs {', '.join(map(str, self.inputs))} "
                             f"({type(exc).__name__}: {first_line(exc)}); check --input or the arrays given") from exc

    def _arrays(self, result) -> list[np.ndarray]:
        try:
            return [t.detach().cpu().numpy() for t in flatten_outputs(result)]
        except Exception as exc:  # noqa: BLE001 - e.g. a None, an int or a bfloat16 tensor among the outputs
            raise InputError(f"{self.what} returns something that is not tensors numpy can hold "
                             f"({type(exc).__name__}: {first_line(exc)}); return float tensors from forward()") from exc

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._arrays(self._forward([feeds[n] for n in self.input_names]))

    def bench_call(self, batches: list[dict]):
        return super().bench_call(batches) if self._device.type == "cpu" else self.placed_call(batches)

    def placed_call(self, batches: list[dict]):
        """``bench_call`` with every batch's tensors on the runtime's device once and the outputs left there;
        each call waits for the device (``torch.cuda.synchronize``)."""
        torch, device = self._torch, self._device

        def place(feeds: dict) -> list:
            tensors = [torch.from_numpy(np.ascontiguousarray(c(feeds[c.name]))).to(device) for c in self._checks]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return tensors

        placed = [place(feeds) for feeds in batches]
        following = itertools.cycle(placed).__next__

        def compute(tensors):
            with torch.inference_mode():
                result = self._module(*tensors)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return result

        outputs = flatten_outputs(compute(placed[0]))
        copies = {"host_to_device_ms": median_ms(lambda: place(batches[0])),
                  "device_to_host_ms": median_ms(lambda: [t.cpu() for t in outputs])}
        return (lambda: compute(following())), copies


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
