"""TensorSpec: what one model input or output looks like, the ``NAME:DIMS[:DTYPE]`` syntax for it, and the
one place that says how many bytes arrays of a spec take (checked before anything is allocated).

Symbolic dimensions (a dynamic batch, a variable sequence length) are kept as their names, so that a
spec read from an ONNX file, from a torch export or from the command line means the same everywhere.
A symbolic dim may have a range (``DimRange``: min, opt, max), which TensorRT profiles and CoreML
``RangeDim`` need: it lives beside the shape in ``TensorSpec.ranges`` (dim name -> range), so ``shape``
stays ints and names for every user of it. Shapes are shown one way everywhere: ``batch×3×224×224``
(``scalar`` for rank 0), with ranges ``batch(1..32)×3×224×224`` (``batch(1..8..32)`` when opt is not the
max), specs as ``x:batch×3×224×224:float32``; the parser takes ``×``, ``x`` or ``,`` between dims, and a
range as ``1..32`` (named ``batch`` on axis 0, ``<input>_dim<axis>`` elsewhere), ``batch=1..32`` or
``batch(1..32)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Sequence, Union

import numpy as np

from .errors import SpecError

Dim = Union[int, str]

#: dtype names accepted on the command line, mapped to edgeml's names.
DTYPE_ALIASES = {
    "float32": "float32", "float": "float32", "fp32": "float32",
    "float16": "float16", "half": "float16", "fp16": "float16",
    "float64": "float64", "double": "float64",
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "int8": "int8",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "bool": "bool", "string": "str", "str": "str",
}
#: edgeml dtype -> the numpy dtype its arrays have. A dtype outside it (bfloat16, float8, complex) has no
#: array onnxruntime's Python API can take, so an input of it is refused with a clear error.
NUMPY_DTYPES = {name: np.dtype(object if name == "str" else name) for name in set(DTYPE_ALIASES.values())}

#: The size limit on one set of arrays edgeml makes or is told of, and how a user raises it.
MAX_BYTES_ENV = "EDGEML_MAX_INPUT_BYTES"
DEFAULT_MAX_BYTES = 2 * 1024**3
#: numpy 1.x arrays have at most 32 dims; nothing real comes close.
MAX_RANK = 32

SHAPE_SEPARATOR = "×"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")
_SYMBOL = re.compile(r"\?|[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also takes '²' and '٢٠'
_BYTES = re.compile(r"([0-9]+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_HINT = "write it as NAME:DIMS[:DTYPE], e.g. x:1x3x224x224 or ids:batchx128:int64"
#: A ranged dim: ``1..32``, ``batch=1..32``, ``batch(1..32)``, with an opt: ``1..8..32``.
_RANGED = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_]*)=)?([^=()]*\.\.[^=()]*)|([A-Za-z_][A-Za-z0-9_]*)\(([^=()]*\.\.[^=()]*)\)")
RANGE_HINT = "write MIN..MAX or MIN..OPT..MAX with whole numbers 1 <= MIN <= OPT <= MAX and MIN < MAX, e.g. 1..32"


class DimRange(NamedTuple):
    """The sizes a symbolic dim takes: ``min..max``, and ``opt``, the size it is built and checked for
    (TensorRT's optimization profile, CoreML's default; generated inputs use it). ``opt`` is ``max`` unless
    given as ``min..opt..max``."""

    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min}..{self.max}" if self.opt == self.max else f"{self.min}..{self.opt}..{self.max}"


def parse_range(text: str, what: str) -> DimRange:
    """``MIN..MAX`` or ``MIN..OPT..MAX`` as a DimRange; a SpecError naming ``what`` (the dim) and the fix."""
    parts = [p.strip() for p in str(text).split("..")]
    if len(parts) not in (2, 3) or not all(_DIGITS.fullmatch(p) and len(p) <= 12 for p in parts):
        raise SpecError(f"bad range {_short(str(text))} for {what}: {RANGE_HINT}")
    low, *opt, high = (int(p) for p in parts)
    opt = opt[0] if opt else high
    if low < 1:
        raise SpecError(f"range {text} for {what} starts at {low}: sizes start at 1; write {max(low, 1)}..{high}")
    if low > high:
        raise SpecError(f"range {text} for {what} has its minimum above its maximum; write {high}..{low}")
    if low == high:
        raise SpecError(f"range {text} for {what} holds one size: write the size {low} itself, or a range MIN < MAX")
    if not low <= opt <= high:
        raise SpecError(f"range {text} for {what}: its opt {opt} is outside {low}..{high}; {RANGE_HINT}")
    return DimRange(low, opt, high)


def format_shape(shape: Sequence, ranges: Mapping[str, DimRange] | None = None) -> str:
    """``batch×3×224×224``, ``batch(1..32)×3×224×224`` with ``ranges``; ``scalar`` for rank 0. For specs and
    arrays alike, in every message."""
    ranges = ranges or {}
    dims = (f"{d}({ranges[d]})" if isinstance(d, str) and d in ranges else str(d) for d in shape)
    return SHAPE_SEPARATOR.join(dims) if len(shape) else "scalar"


def format_bytes(n: float) -> str:
    """``2 GiB``, ``7.28 TiB``: sizes in messages."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.3g} {units[i]}"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    #: symbolic dim name -> its range, for the names in ``shape`` that have one.
    ranges: Mapping[str, DimRange] = field(default_factory=dict, hash=False)

    @property
    def np_dtype(self) -> np.dtype:
        dtype = NUMPY_DTYPES.get(self.dtype)
        if dtype is None:
            raise SpecError(
                f"input {self.name!r} has type {self.dtype}, which edgeml cannot feed (numpy and onnxruntime's "
                f"Python API have no such arrays); export the model with inputs of {', '.join(sorted(NUMPY_DTYPES))}"
            )
        return dtype

    @property
    def is_dynamic(self) -> bool:
        return any(isinstance(d, str) for d in self.shape)

    def with_batch(self, batch: int | str) -> "TensorSpec":
        """The same spec with its first dimension replaced (a number, or a symbol for a dynamic batch)."""
        if not self.shape:
            return self
        return self.reshaped((batch, *self.shape[1:]))

    def reshaped(self, shape: Sequence[Dim]) -> "TensorSpec":
        """The same input with another shape, keeping the ranges of the dims still named in it."""
        shape = tuple(shape)
        return TensorSpec(self.name, shape, self.dtype, {k: v for k, v in self.ranges.items() if k in shape})

    def concrete_shape(self, batch: int = 1, other: int = 1, batch_dims=()) -> tuple[int, ...]:
        """A shape to make data for: symbolic dims become ``batch`` (the first axis, and dims named in
        ``batch_dims``: ``batch_symbols`` of the model's inputs) or ``other``."""
        return tuple(
            d if isinstance(d, int) else (batch if i == 0 or d in batch_dims else other) for i, d in enumerate(self.shape)
        )

    def __str__(self) -> str:
        return f"{self.name}:{format_shape(self.shape, self.ranges)}:{self.dtype}"

    def __repr__(self) -> str:
        return f"<TensorSpec {self}>"

    def to_dict(self) -> dict:
        """JSON-safe (manifests, inspect): ``ranges`` as {dim: [min, opt, max]}, only when there are some."""
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.ranges:
            d["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], tuple(d["shape"]), d["dtype"], {k: DimRange(*v) for k, v in d.get("ranges", {}).items()})


def normalize_dtype(name: str, context: str = "") -> str:
    key = str(name).strip().lower()
    if key in DTYPE_ALIASES:
        return DTYPE_ALIASES[key]
    raise SpecError(
        f"unknown dtype {_short(str(name))}{context}; use one of: " + ", ".join(sorted(set(DTYPE_ALIASES.values())))
    )


def parse_spec(text: str) -> TensorSpec:
    """Parse ``NAME:DIMS[:DTYPE]``, e.g. ``x:1x3x224x224``, ``ids:batch×128:int64`` or ``t:scalar``.

    Dims are separated by ``×`` (as edgeml prints them), ``x`` or ``,``; a dim that is a positive ASCII
    number is fixed, a name (``batch``, ``?``) is symbolic. A spec whose fixed dims alone exceed the size
    limit is refused here, before anything is made from it.
    """
    if not isinstance(text, str):
        raise SpecError(f"an input spec is a string NAME:DIMS[:DTYPE] or a TensorSpec, not {type(text).__name__}; {_HINT}")
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise SpecError(f"bad input spec {_short(text)}: {_HINT}")
    name, dims_text = parts[0], parts[1].strip(" ")
    if not _NAME.fullmatch(name):
        raise SpecError(f"bad input name {_short(name)} in input spec {_short(text)}: a name starts with a letter or _ "
                        f"and holds letters, digits, _ . - /; {_HINT}")
    dtype = normalize_dtype(parts[2], f" in input spec {_short(text)}") if len(parts) == 3 else "float32"
    dims = [] if dims_text == "scalar" else [d.strip(" ") for d in _split_dims(dims_text)]
    if len(dims) > MAX_RANK:
        raise SpecError(f"input spec {_short(text)} has {len(dims)} dims, more than the {MAX_RANK} edgeml takes; check the spec")
    shape, ranges = [], {}
    for axis, dim in enumerate(dims):
        ranged = _RANGED.fullmatch(dim)
        if ranged:
            symbol = ranged.group(1) or ranged.group(3) or ("batch" if axis == 0 else f"{_symbol_of(name)}_dim{axis}")
            found = parse_range(ranged.group(2) or ranged.group(4), f"dim {symbol} (axis {axis}) of input {name!r}")
            if ranges.get(symbol, found) != found:
                raise SpecError(f"dim {symbol} of input {name!r} has two ranges, {ranges[symbol]} and {found}; give one")
            shape.append(symbol)
            ranges[symbol] = found
        else:
            shape.append(_parse_dim(dim, text))
    spec = TensorSpec(name, tuple(shape), dtype, ranges)
    check_input_bytes([spec], what=f"input spec {_short(text)}")
    return spec


def _split_dims(dims_text: str) -> list[str]:
    # With '×' present it is the only separator, so symbols may hold an 'x' (x:max_len×8 reads back; a
    # lone x:max_len cannot: without a '×' every 'x' separates, as in x:batchx128).
    return dims_text.split(SHAPE_SEPARATOR) if SHAPE_SEPARATOR in dims_text else re.split(r"[x,]", dims_text)


def _symbol_of(name: str) -> str:
    """An input name made a dim name (letters, digits, _), for the dims of an unnamed range."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return cleaned if not cleaned[0].isdigit() else f"_{cleaned}"


def _parse_dim(dim: str, text: str) -> Dim:
    if _DIGITS.fullmatch(dim) and dim.strip("0"):
        if len(dim) > 30:  # int() of thousands of digits fails; no limit comes near 10^30 bytes
            raise SpecError(f"dimension {dim[:12]}... ({len(dim)} digits) in input spec {_short(text)} is absurd; check the spec")
        return int(dim)
    if _SYMBOL.fullmatch(dim):
        return dim
    raise SpecError(f"bad dimension {_short(dim)} in input spec {_short(text)}: a dim is a positive number "
                    f"(ASCII digits) or a name such as batch; {_HINT}")


def _short(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut to ``limit`` characters: a message stays one readable line."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def parse_specs(texts) -> list[TensorSpec]:
    """Specs from strings or TensorSpecs (one string is one spec); each name once."""
    if isinstance(texts, (str, TensorSpec)):
        texts = [texts]
    specs = [s if isinstance(s, TensorSpec) else parse_spec(s) for s in texts]
    names = [s.name for s in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SpecError(f"input {sorted(duplicates)[0]!r} is given twice; give each input once")
    return with_ranges(specs, {})


def spec_ranges(specs: Iterable[TensorSpec]) -> dict[str, DimRange]:
    """The ranges of the specs' dims, each dim name once: a name is one dim of the model, so two inputs that
    give it different ranges are refused."""
    found: dict[str, tuple[DimRange, str]] = {}
    for spec in specs:
        for dim, bounds in spec.ranges.items():
            other = found.setdefault(dim, (bounds, spec.name))
            if other[0] != bounds:
                raise SpecError(f"dim {dim} has range {other[0]} in input {other[1]!r} and {bounds} in input "
                                f"{spec.name!r}; a dim name is one dim of the model: give it one range")
    return {dim: bounds for dim, (bounds, _) in found.items()}


def with_ranges(specs: Iterable[TensorSpec], ranges: Mapping[str, DimRange]) -> list[TensorSpec]:
    """``specs`` with ``ranges`` added to theirs, every input with a dim of a ranged name carrying its range."""
    specs = list(specs)
    merged = {**spec_ranges(specs), **ranges}
    return [TensorSpec(s.name, s.shape, s.dtype, {d: merged[d] for d in s.shape if isinstance(d, str) and d in merged})
            for s in specs]


def dynamic_batch(specs: list[TensorSpec], symbol: str = "batch") -> list[TensorSpec]:
    return [s.with_batch(symbol) for s in specs]


def spec_of_array(name: str, array: np.ndarray) -> TensorSpec:
    """The spec of an array as it is (a dtype edgeml cannot feed, e.g. complex64, keeps its numpy name)."""
    dtype = "str" if array.dtype.kind in "OUST" else DTYPE_ALIASES.get(array.dtype.name, array.dtype.name)
    return TensorSpec(name, tuple(int(d) for d in array.shape), dtype)


# -- sizes: estimated here, before any array is made -----------------------------------------------


def max_input_bytes() -> int:
    """The limit on one set of inputs: ``EDGEML_MAX_INPUT_BYTES`` (bytes, or with K/M/G/T binary units)."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    match = _BYTES.fullmatch(text)
    if not match:
        raise SpecError(f"{MAX_BYTES_ENV}={text!r} is not a size; give bytes, e.g. {MAX_BYTES_ENV}=8G or {8 * 1024**3}")
    return int(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " ")


def batch_symbols(specs: Iterable[TensorSpec]) -> set[str]:
    """The names of the inputs' symbolic first dims: a dim is named once per model, so such a symbol is the
    batch on every axis it appears on (a recurrent state shaped 2 x batch x 128 beside x: batch x 576). An
    unnamed dim (``?``) names nothing: two of them need not be the same size."""
    return {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], str) and s.shape[0] != "?"}


def fixed_batch(specs: Iterable[TensorSpec]) -> int | None:
    """The batch of a model exported for one batch size: every input with a dim has a fixed first one, all
    alike (x: 1x3x224x224). None when the batch is dynamic: then an input with a fixed first dim (silero-vad's
    state: 2x?x128 beside input: ?x?) holds something else there, and is not batched on its first axis."""
    firsts = {s.shape[0] for s in specs if s.shape}
    return firsts.pop() if len(firsts) == 1 and isinstance(next(iter(firsts)), int) else None


def batch_axes(specs: Iterable[TensorSpec]) -> dict[str, int | None]:
    """The axis that carries the batch in each input, None for an input that has none (a scalar, or a fixed
    first dim with no known batch symbol elsewhere: such an input is given whole, as it is, to every call)."""
    specs = list(specs)
    if fixed_batch(specs) is not None:
        return {s.name: 0 if s.shape else None for s in specs}
    symbols = batch_symbols(specs)
    axes: dict[str, int | None] = {}
    for spec in specs:
        carriers = [i for i, d in enumerate(spec.shape) if isinstance(d, str) and (i == 0 or d in symbols)]
        axes[spec.name] = carriers[0] if carriers else None
    return axes


def batched(specs: Iterable[TensorSpec], batch: int) -> list[TensorSpec]:
    """``specs`` for ``batch`` samples, the batch set where it lives: on every first axis of a fixed-batch
    model (whose samples are then run in chunks), else on symbolic first axes and every axis carrying a known
    batch symbol. Fixed dims stay: what is made of these specs fits the model (``with_batch`` replaces the
    first dim whatever it is)."""
    specs = list(specs)
    if fixed_batch(specs) is not None:
        return [s.with_batch(batch) for s in specs]
    symbols = batch_symbols(specs)
    return [s.reshaped(batch if isinstance(d, str) and (i == 0 or d in symbols) else d for i, d in enumerate(s.shape))
            for s in specs]


def input_bytes(specs: Iterable[TensorSpec], batch: int = 1, other: int = 1) -> int:
    """Bytes that arrays for ``specs`` take, symbolic dims sized as in ``concrete_shape`` (text: 8 a value)."""
    specs = list(specs)
    batch_dims, total = batch_symbols(specs), 0
    for spec in specs:
        size = spec.np_dtype.itemsize
        for dim in spec.concrete_shape(batch, other, batch_dims):
            if dim < 0:
                raise SpecError(f"input {spec.name!r} has shape {format_shape(spec.shape)}: dimension {dim} "
                                "is not a size; the model file is malformed, re-export it")
            size *= int(dim)  # a Python int: numpy ints would wrap around
        total += size
    return total


def check_count(value, label: str) -> int:
    """``value`` as a whole number >= 1 (a batch, a dim's size), or a SpecError naming ``label``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SpecError(f"the {label} must be a whole number >= 1, got {value!r}")
    return int(value)


def check_input_bytes(specs: Sequence[TensorSpec], batch: int = 1, other: int = 1, what: str = "the inputs") -> int:
    """Refuse ``specs`` at this size above the limit, naming it and how to raise it; returns the bytes."""
    check_count(batch, "batch")
    check_count(other, "size of a symbolic dim")
    size, limit = input_bytes(specs, batch, other), max_input_bytes()
    if size > limit:
        largest = max(specs, key=lambda s: input_bytes([s], batch, other))
        raise SpecError(
            f"{what} would take {format_bytes(size)} (input {largest.name!r}: "
            f"{format_shape(largest.concrete_shape(batch, other))} {largest.dtype}), above the {format_bytes(limit)} "
            f"limit on one set of inputs; use smaller dims or batch, or raise the limit: {MAX_BYTES_ENV}={size}"
        )
    return size
