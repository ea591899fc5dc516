"""Input arrays for checks and benchmarks: generated from specs with a fixed seed, or read from a file.

Generated inputs mean something for token models: what each input holds (its role: token ids, attention mask,
token type ids, position ids, plain values) and the range of integer inputs come from the model's metadata
(``ModelMeta``), else from its input names and its graph (``model_meta.input_meta``). ``sizes`` (``--shape
sequence=128``) set symbolic dims; ``describe_feeds`` records the shapes made and where they came from for
every report.

A symbolic dim may have a range (``--input x:1..32x4``, ``--shape sequence=8..128``; ``spec.DimRange``),
declared on the source's specs and recorded in the artifact's metadata (``ModelMeta.dim_range``). No
generated input leaves it: a ranged dim is generated at the range's opt (its max unless given as
``MIN..OPT..MAX``), so the check proves the graph at the size it is built for; a batch or ``--shape`` size
outside the range is refused (``check_sizes``, ``concrete_specs``).
"""

from __future__ import annotations

import itertools
import re
from typing import Mapping

import numpy as np

from .datafiles import array_shapes, check_sample, open_source, read_arrays
from .errors import InputError, SpecError
from .model_meta import ModelMeta, checked_meta, dtype_kind, infer_role
from .readable import regular_file
from .spec import (DimRange, TensorSpec, batch_axes, batch_symbols, check_count, check_input_bytes, format_shape,
                   parse_range, spec_of_array, spec_ranges, with_ranges)

DEFAULT_SEED = 0
#: Size given to symbolic dims other than the batch (a sequence length, an image side) in generated data.
OTHER_DIM = 8
#: Generated token ids skip the lowest ids of a vocabulary this large: BERT-like vocabularies keep them for
#: [PAD], [CLS], [SEP], [MASK], [UNK] and unused slots (BERT's first real token is 999), so ids in
#: [1000, vocab) are ordinary word pieces. Smaller vocabularies skip only id 0, the usual padding id.
SPECIAL_IDS = 1000
_SHAPE_ITEM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=([0-9]{1,12}|[^=,]*\.\.[^=,]*)")
_SHAPE_HINT = ("write NAME=SIZE, e.g. --shape sequence=128 (several: sequence=128,height=224), or at convert a "
               "range NAME=MIN..MAX, e.g. --shape batch=1..32")


class Shapes(dict):
    """``--shape`` as parsed: {dim name: size} for the sizes given, and ``ranges`` {dim name: DimRange} for
    the ranges given (``NAME=MIN..MAX``, which convert records in the artifact)."""

    def __init__(self, sizes=(), ranges: Mapping[str, DimRange] | None = None):
        super().__init__(sizes)
        self.ranges = dict(ranges or {})


def parse_shapes(value) -> Shapes:
    """Sizes and ranges of symbolic dims from ``"sequence=128"``, ``"sequence=128,batch=1..32"``, a list of
    such strings, or a mapping (values: sizes, ``"MIN..MAX"`` or DimRanges); an InputError for anything else
    (a bad name, a size that is not a whole decimal number >= 1, a bad range, a name given twice)."""
    if value is None:
        return Shapes()
    if isinstance(value, Shapes):
        return value
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        texts = [value] if isinstance(value, str) else list(value)
        items = []
        for text in texts:
            if not isinstance(text, str):
                raise InputError(f"a --shape is text NAME=SIZE, not a {type(text).__name__}; {_SHAPE_HINT}")
            for part in text.split(","):
                match = _SHAPE_ITEM.fullmatch(part.strip())
                if not match:
                    raise InputError(f"bad --shape {part.strip()[:60]!r}: a symbolic dim's name, '=', and a whole "
                                     f"number of ASCII digits; {_SHAPE_HINT}")
                given = match.group(2)
                items.append((match.group(1), given if ".." in given else int(given)))
    shapes = Shapes()
    for name, size in items:
        if isinstance(size, (str, DimRange)):
            bounds = size if isinstance(size, DimRange) else parse_range(size, f"--shape {name}")
            if shapes.ranges.get(name, bounds) != bounds or name in shapes:
                raise InputError(f"--shape gives {name} twice; give each dim once")
            shapes.ranges[name] = bounds
            continue
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise InputError(f"--shape {name}={size!r}: a size is a whole number >= 1; {_SHAPE_HINT}")
        if shapes.get(name, size) != size or name in shapes.ranges:
            raise InputError(f"--shape gives {name} twice; give each dim once")
        shapes[name] = int(size)
    return shapes


def dim_ranges(specs: list[TensorSpec], meta: ModelMeta | None = None) -> dict[str, DimRange]:
    """The ranges of the model's dims: those its metadata records (``ModelMeta.dim_range``), and those of its
    specs (``--input x:1..32x4``)."""
    return {**checked_meta(meta).ranges, **spec_ranges(specs)}


def declare_ranges(specs: list[TensorSpec], meta: ModelMeta | None, ranges: Mapping[str, DimRange]):
    """``(specs, meta)`` of a source with ``ranges`` (``--shape batch=1..32``) declared on its symbolic dims
    and the ranges of its specs recorded in ``meta`` (which the artifact's metadata is written from). A range
    for a dim no input has as a symbol (a fixed dim, a typo), or beyond the model's largest size, is refused."""
    meta = meta or ModelMeta()
    named = sorted({d for s in specs for d in s.shape if isinstance(d, str) and d != "?"})
    for name, bounds in ranges.items():
        if name not in named:
            raise InputError(f"--shape {name}={bounds}: no input of the model has a symbolic dim named {name!r} "
                             f"(its symbolic dims: {', '.join(named) or 'none: every dim is fixed'}); a fixed dim "
                             "takes no range: export the model with that dim dynamic")
        largest = meta.dim_max.get(name)
        if largest is not None and bounds.max > largest:
            raise InputError(f"--shape {name}={bounds} goes beyond the model's largest {name}, {largest}; "
                             f"use a range up to {largest}")
    specs = with_ranges(specs, ranges)
    declared = spec_ranges(specs)
    return specs, (meta.with_ranges(declared) if declared else meta)


def largest_batch(specs: list[TensorSpec], meta: ModelMeta | None = None) -> int | None:
    """The largest batch the model takes (the max of its batch dims' ranges or ``dim_max``); None if unbounded."""
    meta = checked_meta(meta)
    bounds = {**meta.dim_max, **{k: r.max for k, r in dim_ranges(specs, meta).items()}}
    found = [bounds[s] for s in batch_symbols(specs) if s in bounds]
    return min(found, default=None)


def check_sizes(specs: list[TensorSpec], sizes: Mapping[str, int], meta: ModelMeta | None = None,
                batch_fix: str | None = None) -> None:
    """Refuse sizes for dims no input has, and sizes outside the model's range or beyond its largest
    (``meta.dim_max``); with ``batch_fix`` (how the batch is set instead), a size for the batch dim too. A
    range (``Shapes.ranges``) passes only where it is the model's own (declared at convert): elsewhere a
    range sets nothing."""
    ranges = dim_ranges(specs, meta)
    for name, bounds in getattr(sizes, "ranges", {}).items():
        if ranges.get(name) != bounds:
            raise InputError(f"--shape {name}={bounds} is a range, which only convert takes (it records it in the "
                             f"artifact); give one size here, e.g. --shape {name}={bounds.opt}")
    if batch_fix is not None:
        batch = sorted(batch_symbols(specs) & set(sizes))
        if batch:
            raise InputError(f"--shape {batch[0]}={sizes[batch[0]]}: {batch[0]} is the batch dim; {batch_fix}")
    named = sorted({d for s in specs for d in s.shape if isinstance(d, str) and d != "?"})
    unknown = [name for name in sizes if name not in named]
    if unknown:
        have = ", ".join(named) or "none: every dim is fixed"
        raise InputError(f"--shape {unknown[0]}: no input of the model has a dim named {unknown[0]!r} "
                         f"(its symbolic dims: {have})")
    for name, size in sizes.items():
        largest = (meta.dim_max if meta else {}).get(name)
        if name in ranges and not ranges[name].min <= size <= ranges[name].max:
            raise InputError(f"--shape {name}={size} is outside the model's range for {name}, {ranges[name]}; "
                             f"use a size in {ranges[name].min}..{ranges[name].max}")
        if largest is not None and size > largest:
            raise InputError(f"--shape {name}={size} is beyond the model's largest {name}, {largest}; "
                             f"use {name}={largest} or less")


def concrete_specs(specs: list[TensorSpec], batch: int = 1, other: int = OTHER_DIM, *,
                   sizes: Mapping[str, int] | None = None, meta: ModelMeta | None = None) -> list[TensorSpec]:
    """``specs`` with every symbolic dim made a size: a dim named in ``sizes`` gets that size (on any axis,
    the first too: ``sizes`` wins over ``batch``), another first axis (and its symbol elsewhere) gets
    ``batch``, a dim with a range (``dim_ranges``) its opt, any other ``other``, at most the model's largest
    (``meta.dim_max``). A ``batch`` outside a named first axis's range or above its largest is refused; so are
    unknown names and sizes outside the range or beyond the largest (``check_sizes``)."""
    batch, other = check_count(batch, "batch"), check_count(other, "size of a symbolic dim")
    meta = checked_meta(meta)
    check_sizes(specs, sizes or {}, meta)
    sizes, ranges = dict(sizes or {}), dim_ranges(specs, meta)
    largest = meta.dim_max if meta else {}
    batch_dims = batch_symbols(specs)

    def size(dim, axis: int) -> int:
        if isinstance(dim, int):
            return dim
        if dim in sizes:
            return sizes[dim]
        if axis == 0 or dim in batch_dims:
            if dim in ranges and not ranges[dim].min <= batch <= ranges[dim].max:
                raise InputError(f"batch {batch} is outside the model's range for {dim}, {ranges[dim]}; "
                                 f"use a batch in {ranges[dim].min}..{ranges[dim].max}")
            if batch > largest.get(dim, batch):
                raise InputError(f"batch {batch} is beyond the model's largest {dim}, {largest[dim]}; "
                                 f"use a batch of {largest[dim]} or less")
            return batch
        if dim in ranges:
            return ranges[dim].opt
        return min(other, largest.get(dim, other))

    return [TensorSpec(s.name, tuple(size(d, i) for i, d in enumerate(s.shape)), s.dtype) for s in specs]


def token_range(vocab: int) -> tuple[int, int]:
    """The ids generated for a token input of a ``vocab``-word vocabulary: [low, vocab) (see SPECIAL_IDS)."""
    return (SPECIAL_IDS if vocab >= 2 * SPECIAL_IDS else min(1, vocab - 1)), vocab


# -- generated inputs ----------------------------------------------------------------------------------

def random_feeds(specs: list[TensorSpec], batch: int = 1, seed: int = DEFAULT_SEED, other: int = OTHER_DIM, *,
                 sizes: Mapping[str, int] | None = None, meta: ModelMeta | None = None) -> dict[str, np.ndarray]:
    """Deterministic inputs for ``specs`` (shapes: ``concrete_specs``), by role (``meta.roles``, else the
    input's name):

    - token ids: uniform in ``token_range(vocab)`` with ``meta.vocab``; 0 at padded positions (those the
      attention mask of the same shape zeroes). Without a known vocabulary: 0 and 1 only (every table has them);
    - attention mask: ones, each row but the first (the longest, as padding to the longest gives) padded at
      the end to a random length of at least 1: never an all-zero row;
    - token type ids: 0; position ids: 0, 1, 2... along the sequence;
    - other inputs: standard normal floats, integers uniform in [0, vocab) when ``meta.vocab`` knows the
      input (an index into a table), else 0 and 1; random bools.

    Their size is checked against the limit (``spec.check_input_bytes``) before anything is allocated.
    """
    meta = checked_meta(meta)
    specs = list(specs)
    concrete = concrete_specs(specs, batch, other, sizes=sizes, meta=meta)
    check_input_bytes(concrete, what=f"generated inputs at batch {batch}")
    rng = np.random.default_rng(seed)
    roles = {s.name: meta.roles.get(s.name) or infer_role(s) for s in specs}
    feeds, lengths = {}, {}
    for spec in concrete:
        shape, dtype, role = spec.concrete_shape(), spec.np_dtype, roles[spec.name]
        if dtype.kind not in "fiub":
            raise SpecError(
                f"cannot generate values for text input {spec.name!r}; give real rows with --data FILE (or --sample for scikit-learn)"
            )
        if role == "attention_mask":
            mask = np.ones(shape, dtype=dtype)
            if len(shape) == 2 and shape[0] and shape[1]:
                length = lengths.setdefault(shape, _row_lengths(rng, *shape))
                mask[np.arange(shape[1]) >= length[:, None]] = 0
            feeds[spec.name] = mask
        elif role == "token_type_ids":
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
        elif role == "position_ids" and shape:
            feeds[spec.name] = np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
        elif dtype.kind in "iu" and spec.name in meta.vocab:
            vocab = int(meta.vocab[spec.name])
            low, high = token_range(vocab) if role == "token_ids" else (0, vocab)
            feeds[spec.name] = np.asarray(rng.integers(low, max(high, low + 1), size=shape), dtype=dtype)
        elif dtype.kind == "f":
            feeds[spec.name] = np.asarray(rng.standard_normal(shape), dtype=dtype)
        else:
            feeds[spec.name] = np.asarray(rng.integers(0, 2, size=shape), dtype=dtype)
    for spec in concrete:  # token ids are padding where their mask is
        shape = spec.concrete_shape()
        if roles[spec.name] == "token_ids" and shape in lengths:
            feeds[spec.name][np.arange(shape[1]) >= lengths[shape][:, None]] = 0
    return feeds


def generated_failure(what: str, specs: list[TensorSpec], meta: ModelMeta | None, reason: str) -> InputError:
    """The error for a model that fails on generated inputs: it names the inputs whose values were guessed
    (integers of unknown range, such as a sample rate, made 0 or 1) and asks for real ones."""
    meta = checked_meta(meta)
    guessed = [s.name for s in specs if dtype_kind(s) in ("i", "u", "b") and s.name not in meta.vocab
               and (meta.roles.get(s.name) or infer_role(s)) is None]
    hint = (f"its input(s) {', '.join(map(repr, guessed))} were generated as 0 and 1, which may mean nothing to it"
            if guessed else "generated inputs may mean nothing to it")
    arrays = ", ".join(f"{s.name} {format_shape(s.shape)} {s.dtype}" for s in specs)
    return InputError(f"{what} failed on generated inputs ({reason}); {hint}: give --data FILE with real inputs "
                      f"(a .npz with one array per input: {arrays})")


def _row_lengths(rng, rows: int, columns: int) -> np.ndarray:
    lengths = rng.integers(1, columns + 1, size=rows)
    lengths[0] = columns
    return lengths


def generated_origin(specs: list[TensorSpec], seed: int, meta: ModelMeta | None = None,
                     sizes: Mapping[str, int] | None = None) -> str:
    """How ``random_feeds`` made the inputs, for reports: the seed, what token inputs hold, the ``sizes``."""
    meta = checked_meta(meta)
    parts = []
    for spec in specs:
        role = meta.roles.get(spec.name) or infer_role(spec)
        vocab = meta.vocab.get(spec.name)
        if role == "token_ids":
            low, high = token_range(int(vocab)) if vocab else (0, 2)
            parts.append(f"{spec.name} ids in [{low}, {high})" + ("" if vocab else ", vocabulary unknown"))
        elif role == "attention_mask":
            parts.append(f"{spec.name} ones padded at the end")
        elif role in ("token_type_ids", "position_ids"):
            parts.append(f"{spec.name} {'0' if role == 'token_type_ids' else '0, 1, 2...'}")
        elif vocab:
            parts.append(f"{spec.name} values in [0, {vocab})")
    sized = "".join(f"; {dim}={size}" for dim, size in sorted((sizes or {}).items()))
    return f"generated, seed {seed}" + (f": {'; '.join(parts)}" if parts else "") + sized


# -- real inputs ---------------------------------------------------------------------------------------

def read_feeds(path, specs: list[TensorSpec], limit: int | None = None, *, image=None, text=None) -> dict[str, np.ndarray]:
    """Real inputs, one batch per input: any calibration source (``.npy``, ``.npz``, ``.csv``, a folder of
    arrays or images with ``image``'s preprocessing, ``file.py:function``, a ``.txt`` of sentences with
    ``text``, the model's tokenizer), its samples stacked, the first ``limit`` of them.

    A model with an input that is not batched on its first axis (``unbatched``: silero-vad's state 2x?x128)
    has no samples to count along axis 0: its ``.npz``/``.npy`` file is read as it is, all of it, each array
    checked against its input."""
    if unbatched(specs) and str(path).lower().endswith((".npz", ".npy")):
        return _read_as_given(path, specs)
    return stack_samples(itertools.islice(iter(open_source(path, specs, image=image, text=text)), limit), str(path),
                         specs)


def _read_as_given(path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The arrays of a .npy/.npz as they are, through the calibration reader's checked headers (never a
    pickle, never more than the file holds) and the input size limit, before anything is loaded."""
    path = regular_file(path, "--data file")
    shapes = array_shapes(path, specs)
    check_input_bytes([TensorSpec(s.name, shapes[s.name], s.dtype) for s in specs], what=f"--data {path}")
    return check_sample({name: _whole(array) for name, array in read_arrays(path, specs).items()}, specs, str(path))


def _whole(array) -> np.ndarray:
    """All of an array as ``read_arrays`` gives it: rows read on demand (sliced), a memory map or in memory."""
    if not array.shape:
        return np.asarray(array if isinstance(array, np.ndarray) else array[None])
    return np.asarray(array[0:array.shape[0]])


def unbatched(specs: list[TensorSpec]) -> list[TensorSpec]:
    """The inputs with dims that do not carry the batch on their first axis (``spec.batch_axes``): data for
    them is taken as it is, never split or stacked along axis 0."""
    axes = batch_axes(specs)
    return [s for s in specs if s.shape and axes[s.name] != 0]


def stack_samples(samples, origin: str = "the data", specs: list[TensorSpec] | None = None) -> dict[str, np.ndarray]:
    """Samples of batch 1 stacked into one batch per input, along each input's batch axis (``specs``; else
    axis 0); an input without one (a scalar) keeps the first sample's value."""
    items = list(samples)
    if not items:
        raise InputError(f"{origin} holds no samples; give at least one")
    axes = batch_axes(specs) if specs is not None else {}
    stacked = {}
    for name in items[0]:
        axis = axes.get(name, 0) if np.ndim(items[0][name]) else None
        stacked[name] = items[0][name] if axis is None else np.concatenate([s[name] for s in items], axis=axis)
    return stacked


def sample_count(feeds, specs: list[TensorSpec] | None = None) -> int:
    """How many samples ``feeds`` hold along their batch axes (``specs``; else the first axis); inputs without
    one (scalars), or no inputs at all, make one sample."""
    axes = batch_axes(specs) if specs is not None else {}
    sizes = [np.shape(v)[axes.get(k, 0)] for k, v in feeds.items()
             if np.ndim(v) and axes.get(k, 0) is not None and axes.get(k, 0) < np.ndim(v)]
    return min(sizes, default=1)


def select_rows(feeds: Mapping[str, np.ndarray], specs: list[TensorSpec], rows) -> dict[str, np.ndarray]:
    """``feeds[rows]`` along each input's batch axis (``rows``: a slice or indices); inputs without one whole."""
    axes = batch_axes(specs)
    picked = {}
    for name, value in feeds.items():
        axis = axes.get(name, 0)
        picked[name] = value if axis is None or np.ndim(value) <= axis else value[(slice(None),) * axis + (rows,)]
    return picked


# -- what reports record -------------------------------------------------------------------------------

def describe_feeds(feeds: Mapping[str, np.ndarray], origin: str) -> dict:
    """The concrete inputs a run used, JSON-safe: ``{"origin": ..., "tensors": [{"name", "shape", "dtype"}]}``."""
    tensors = []
    for name, value in feeds.items():
        spec = spec_of_array(name, np.asarray(value))
        tensors.append({"name": name, "shape": list(spec.shape), "dtype": spec.dtype})
    return {"origin": origin, "tensors": tensors}


def format_inputs(description: Mapping | None) -> str:
    """One line for text reports: ``input_ids 1×128 int64, attention_mask 1×128 int64; generated, seed 0``;
    '' for a run that recorded none."""
    if not description:
        return ""
    tensors = ", ".join(f"{t['name']} {format_shape(t['shape'])} {t['dtype']}" for t in description.get("tensors", ()))
    return f"{tensors or 'no inputs'}; {description.get('origin', 'origin unknown')}"
