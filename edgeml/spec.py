"""TensorSpec: what one model input or output looks like, and the ``NAME:DIMS[:DTYPE]`` syntax for it.

Symbolic dimensions (a dynamic batch, a variable sequence length) are kept as their names, so that a
spec read from an ONNX file, from a torch export or from the command line means the same everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

import numpy as np

from .errors import SpecError

Dim = Union[int, str]

#: dtype names accepted on the command line, mapped to numpy's names.
DTYPE_ALIASES = {
    "float32": "float32", "float": "float32", "fp32": "float32",
    "float16": "float16", "half": "float16", "fp16": "float16",
    "float64": "float64", "double": "float64",
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32",
    "int16": "int16", "int8": "int8", "uint8": "uint8", "bool": "bool", "string": "str",
    "str": "str",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")
_SYMBOL = re.compile(r"^[A-Za-z_?][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(object) if self.dtype == "str" else np.dtype(self.dtype)

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.shape)

    def with_batch(self, batch: int | str) -> "TensorSpec":
        """The same spec with its first dimension replaced (a number, or a symbol for a dynamic batch)."""
        if not self.shape:
            return self
        return TensorSpec(self.name, (batch, *self.shape[1:]), self.dtype)

    def concrete_shape(self, batch: int = 1, other: int = 1) -> tuple[int, ...]:
        """A shape to make data for: symbolic dims become ``batch`` (first axis) or ``other``."""
        return tuple(
            d if isinstance(d, int) else (batch if i == 0 else other) for i, d in enumerate(self.shape)
        )

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape) if self.shape else "scalar"
        return f"{self.name}:{dims}:{self.dtype}"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], tuple(d["shape"]), d["dtype"])


def normalize_dtype(name: str, context: str = "") -> str:
    key = str(name).strip().lower()
    if key in DTYPE_ALIASES:
        return DTYPE_ALIASES[key]
    raise SpecError(
        f"unknown dtype {name!r}{context}; use one of: " + ", ".join(sorted(set(DTYPE_ALIASES.values())))
    )


def parse_spec(text: str) -> TensorSpec:
    """Parse ``NAME:DIMS[:DTYPE]``, e.g. ``x:1x3x224x224`` or ``ids:batchx128:int64``.

    Dims are separated by ``x``; a dim that is not a number (``batch``, ``?``) is symbolic.
    """
    hint = "write it as NAME:DIMS[:DTYPE], e.g. x:1x3x224x224 or ids:1x128:int64"
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise SpecError(f"bad input spec {text!r}: {hint}")
    name, dims_text = parts[0], parts[1]
    if not _NAME.match(name):
        raise SpecError(f"bad input name {name!r} in {text!r}: {hint}")
    dtype = normalize_dtype(parts[2], f" in input spec {text!r}") if len(parts) == 3 else "float32"
    shape: list[Dim] = []
    for dim in re.split(r"[x,]", dims_text):
        if dim.isdigit() and int(dim) > 0:
            shape.append(int(dim))
        elif _SYMBOL.match(dim) and not dim.isdigit():
            shape.append("?" if dim == "?" else dim)
        else:
            raise SpecError(f"bad dimension {dim!r} in input spec {text!r}: {hint}")
    return TensorSpec(name, tuple(shape), dtype)


def parse_specs(texts) -> list[TensorSpec]:
    specs = [s if isinstance(s, TensorSpec) else parse_spec(s) for s in texts]
    names = [s.name for s in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SpecError(f"input {sorted(duplicates)[0]!r} is given twice; give each input once")
    return specs


def dynamic_batch(specs: list[TensorSpec], symbol: str = "batch") -> list[TensorSpec]:
    return [s.with_batch(symbol) for s in specs]


def spec_of_array(name: str, array: np.ndarray) -> TensorSpec:
    dtype = "str" if array.dtype.kind in "OUST" else normalize_dtype(array.dtype.name)
    return TensorSpec(name, tuple(int(d) for d in array.shape), dtype)
