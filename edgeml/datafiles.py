"""Users' data files, read as a stream of samples: calibration data for INT8, and real inputs for checks and bench.

A source never holds the whole set in memory, only the current file, CSV chunk or sample: arrays on disk
are memory-mapped, images are decoded one at a time, a CSV is read in chunks and a user's function is
iterated lazily. Every sample is checked against the model's input specs, so that a wrong file fails with
its name instead of deep inside ONNX Runtime. ``split`` picks a fixed-seed calibration subset and a
disjoint held-out set for the accuracy gate.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import math
import os
import re
import struct
import sys
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import BackendMissing, InputError, SpecError, first_line, no_such_file, require
from .readable import regular_file
from .runtimes.base import text_values, to_numpy
from .spec import TensorSpec, format_shape
from .text import read_lines
from .usercode import cwd_importable

#: Rows read from a CSV at a time: the most of a CSV a source holds in memory.
CSV_CHUNK_ROWS = 1024
#: The most samples read from a user's function (it is called once just to count them): a generator that
#: never ends fails with this limit named instead of hanging. Raise it here for larger sets.
MAX_FUNCTION_SAMPLES = 100_000
ARRAY_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Sentences, one a line, tokenized by the model's tokenizer.
TEXT_SUFFIX = ".txt"


def is_text_file(source) -> bool:
    """Whether ``source`` names a ``.txt`` file of sentences, read through a model's tokenizer."""
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == TEXT_SUFFIX

Sample = dict[str, np.ndarray]
#: A sample and where it comes from ("calib.npz, sample 3", "data.csv, row 7"), for error messages.
Labelled = tuple[str, Sample]


@dataclass
class ImageOptions:
    """How image files become model inputs; recorded in the manifest so that an app can repeat it."""

    resize: tuple[int, int] | None = None  # (height, width); default: the model input's H, W when fixed
    mean: tuple[float, ...] | None = None  # per channel, applied after scaling
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"  # or "NHWC"
    scale: float = 255.0  # pixel values are divided by this first

    def __post_init__(self):
        self.layout = str(self.layout).upper()
        if self.layout not in ("NCHW", "NHWC"):
            raise InputError(f"unknown image layout {self.layout!r}; use NCHW (channels first) or NHWC (channels last)")
        if not (isinstance(self.scale, (int, float)) and 0 < self.scale < math.inf):
            raise InputError(f"image scale must be a positive number, got {self.scale}; pixels are divided by it (255 maps them to 0..1)")
        if self.resize is not None:
            if not (len(self.resize) == 2 and all(float(d).is_integer() and 1 <= d <= 65536 for d in self.resize)):
                raise InputError(f"resize takes two whole sizes from 1 to 65536 (height, width), got {self.resize}")
            self.resize = tuple(int(d) for d in self.resize)
        self.mean = None if self.mean is None else tuple(float(m) for m in self.mean)
        self.std = None if self.std is None else tuple(float(s) for s in self.std)
        if not all(math.isfinite(v) for v in (*(self.mean or ()), *(self.std or ()))):
            raise InputError(f"mean and std must be finite numbers, got mean {self.mean} and std {self.std}")
        if self.std is not None and min(self.std) <= 0:
            raise InputError(f"std {self.std} holds a value <= 0; give the channels' standard deviations (positive numbers)")

    def normalize(self, pixels, channel_axis: int = -1) -> np.ndarray:
        """Pixels as the model takes them, float32: (pixel / scale - mean_c) / std_c, channels on ``channel_axis``
        (a calibration image's last, a Core ML image input's axis 1)."""
        shape = [1] * np.ndim(pixels)
        shape[channel_axis] = -1
        values = np.asarray(pixels, dtype=np.float32) / np.float32(self.scale)
        if self.mean is not None:
            values -= np.asarray(self.mean, dtype=np.float32).reshape(shape)
        if self.std is not None:
            values /= np.asarray(self.std, dtype=np.float32).reshape(shape)
        return values

    def to_dict(self) -> dict:
        return {
            "resize": None if self.resize is None else list(self.resize),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "layout": self.layout,
            "scale": self.scale,
        }


class CalibrationSource:
    """Samples read on demand, in order. A split is the same source restricted to some sample indices.

    Subclasses read samples by index (``_IndexedSource``) or front to back (``_StreamedSource``), and call
    ``_counted`` once they know how many samples there are.
    """

    description: str
    preprocessing: dict | None = None

    def __init__(self, specs: list[TensorSpec], name: str):
        self.specs = list(specs)
        self.name = name
        self._indices: np.ndarray | None = None  # sorted sample indices of a split; None: every sample

    def _counted(self, count: int, description: str) -> None:
        """Record the size; a source without samples fails now rather than halfway through a conversion."""
        if count == 0:
            raise InputError(f"{self.name} holds no calibration samples; give it at least one (100 to 1000 representative inputs is usual)")
        self._count = count
        self.description = description

    def __len__(self) -> int:
        return self._count if self._indices is None else len(self._indices)

    def __iter__(self) -> Iterator[Sample]:
        """One checked sample per item: ``{input name: array with a leading batch axis of 1}``."""
        for where, sample in self._read(self._indices):
            yield check_sample(sample, self.specs, where)

    def _read(self, indices: np.ndarray | None) -> Iterator[Labelled]:
        """The samples at ``indices`` (ascending; None: all), in that order."""
        raise NotImplementedError

    def split(self, calib: int | None, holdout: int, seed: int = 0) -> tuple[CalibrationSource, CalibrationSource]:
        """A calibration subset and a disjoint held-out subset, from a permutation seeded by ``seed``.

        The first ``calib`` samples of the permutation calibrate (all but the holdout when None), the next
        ``holdout`` at most are for evaluation. When there are no more samples than ``calib`` (or than the
        holdout, with ``calib`` None), 20% are held out (at least 1 of 2 or more, at most ``holdout``).
        Each subset reads its samples in file order, so that files and CSVs are still read front to back.
        """
        if (calib is not None and calib < 1) or holdout < 0:
            raise InputError(f"calibration samples must be at least 1 and held-out samples at least 0, got {calib} and {holdout}")
        n = len(self)
        order = self._positions()[np.random.default_rng(seed).permutation(n)]
        note = ""
        if calib is None and holdout < n:
            calib = n - holdout
        elif calib is None or n <= calib:
            held = min(holdout, max(n // 5, 1 if n >= 2 else 0))
            calib = n - held
            note = f"; only {n} samples, so {held} (20%) are held out" if held else ""
        chosen, held_out = order[:calib], order[calib:calib + holdout]
        return (
            self._subset(chosen, f"{len(chosen)} of {n} samples calibrate (seed {seed}){note}"),
            self._subset(held_out, f"{len(held_out)} of {n} samples held out for evaluation (seed {seed})"),
        )

    def _positions(self) -> np.ndarray:
        return np.arange(self._count) if self._indices is None else self._indices

    def _subset(self, indices: np.ndarray, what: str) -> CalibrationSource:
        subset = copy.copy(self)
        subset._indices = np.sort(indices)
        subset.description = f"{self.description}: {what}"
        return subset

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class _IndexedSource(CalibrationSource):
    """Kinds that read sample ``i`` directly (arrays on disk, image files): a split reads only its samples."""

    def _read(self, indices):
        for i in range(self._count) if indices is None else indices:
            yield self._sample(int(i))

    def _sample(self, i: int) -> Labelled:
        raise NotImplementedError


class _StreamedSource(CalibrationSource):
    """Kinds read front to back only (CSV, functions): a split skips the samples it does not hold."""

    def _read(self, indices):
        if indices is None:
            yield from self._stream()
            return
        wanted = iter(indices.tolist())
        target = next(wanted, None)
        for i, labelled in enumerate(self._stream()):
            if target is None:
                return
            if i == target:
                yield labelled
                target = next(wanted, None)

    def _stream(self) -> Iterator[Labelled]:
        raise NotImplementedError


def open_source(source: Any, specs: list[TensorSpec], *, image: ImageOptions | None = None,
                text: Callable[[list[str]], Sample] | None = None) -> CalibrationSource:
    """The calibration data ``source`` names, for a model with inputs ``specs``.

    ``source``: a ``.npy``, ``.npz`` or ``.csv`` file, a folder of ``.npy``/``.npz`` files or of PNG/JPEG
    images, ``file.py:function`` or ``module:function``, a callable, or a ``.txt`` file of sentences (one a
    line) for a model with a tokenizer: ``text`` turns a list of sentences into the model's inputs, padded to
    one length (``edgeml.text.TextEncoder``, e.g. ``runtime.text_encoder``). ``image`` applies to images only.
    """
    if callable(source):
        found = _FunctionSource(source, getattr(source, "__qualname__", repr(source)), specs)
    elif not isinstance(source, (str, Path)):
        raise InputError(f"calibration data must be a path, file.py:function or a callable, got a {type(source).__name__}; wrap an iterable as a function: lambda: items")
    elif not Path(source).exists():
        if not (isinstance(source, str) and ":" in source):
            raise no_such_file(source, "calibration data")
        found = _FunctionSource(_load_function(source), source, specs)
    else:
        found = _open_path(Path(source), specs, image or ImageOptions(), text)
    if image not in (None, ImageOptions()) and not isinstance(found, _ImageFolder):
        raise InputError(f"image options (resize, mean, std, layout, scale) apply to a folder of images, not to {found.name}; drop them")
    return found


def _open_path(path: Path, specs: list[TensorSpec], image: ImageOptions, text=None) -> CalibrationSource:
    if path.is_dir():
        files = _files_in(path)
        arrays = [f for f in files if f.suffix.lower() in ARRAY_SUFFIXES]
        images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
        if arrays and images:
            raise InputError(f"{path} mixes arrays ({arrays[0].name}) and images ({images[0].name}); keep one kind of calibration data per folder")
        if images:
            return _ImageFolder(path, images, specs, image)
        if arrays:
            return _ArrayFiles(arrays, specs, str(path), folder=True)
        raise InputError(f"calibration folder {path} holds no .npy/.npz arrays or PNG/JPEG images; put the samples there, or give a file")
    path = regular_file(path, "calibration data")
    suffix = path.suffix.lower()
    if suffix in ARRAY_SUFFIXES:
        return _ArrayFiles([path], specs, str(path), folder=False)
    if suffix == ".csv":
        return _CsvRows(path, specs)
    if suffix == TEXT_SUFFIX:
        if text is None:
            raise InputError(f"{path} is text: sentences need the model's tokenizer, which an artifact converted from a "
                             "Hugging Face folder carries; give such an .onnx, or arrays (.npy, .npz, .csv)")
        return _TextLines(path, specs, text)
    hint = f"; to use a function in it, name it: {path}:FUNCTION" if suffix == ".py" else ""
    raise InputError(f"{path} is no calibration data edgeml reads; give .npy, .npz, .csv, a folder of arrays or images, .txt sentences, or file.py:function{hint}")


def _files_in(folder: Path) -> list[Path]:
    """Data files under ``folder`` (subfolders too, e.g. one per class) in sorted order; hidden ones skipped."""
    suffixes = ARRAY_SUFFIXES + IMAGE_SUFFIXES
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in suffixes and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


# -- checking samples ---------------------------------------------------------------------------------

def check_sample(sample: Mapping[str, Any], specs: list[TensorSpec], where: str) -> Sample:
    """The sample as the model takes it (each input of its spec's dtype), or a SpecError saying what differs."""
    return {spec.name: _check_input(sample, spec, where) for spec in specs}


def _check_input(sample: Mapping[str, Any], spec: TensorSpec, where: str) -> np.ndarray:
    if spec.name not in sample:
        found = ", ".join(map(repr, sample)) or "none"
        raise SpecError(f"{where}: no array for input {spec.name!r} (expected shape {format_shape(spec.shape)}, {spec.dtype}; found inputs: {found}); give one array per input name")
    array = to_numpy(sample[spec.name], spec.name)
    if array.ndim != len(spec.shape) or any(isinstance(d, int) and d != s for d, s in zip(spec.shape, array.shape)):
        raise SpecError(f"{where}: input {spec.name!r} expects shape {format_shape(spec.shape)}, found {format_shape(array.shape)}; reshape or resize the data to the model's input")
    if not _casts_safely(array.dtype, spec):
        found = "text" if array.dtype.kind in "OUS" else array.dtype.name
        raise SpecError(f"{where}: input {spec.name!r} expects dtype {spec.dtype}, found {found}; convert the data to {spec.dtype}")
    try:
        with np.errstate(over="raise", invalid="ignore"):  # NaN stays NaN (refused by name later); overflow is here
            return np.array(array, dtype=spec.np_dtype)  # a copy of one sample, out of any memory map
    except FloatingPointError as exc:
        raise SpecError(f"{where}: input {spec.name!r} holds values beyond {spec.dtype}'s range; scale the data "
                        f"to fit {spec.dtype}") from exc


def _casts_safely(found: np.dtype, spec: TensorSpec) -> bool:
    """Safe casts, plus float64 -> float32 and integer -> float (how calibration data is usually saved)."""
    if spec.dtype == "str":
        return found.kind in "OUS"
    if found.kind not in "biuf":
        return False
    return spec.np_dtype.kind == "f" or bool(np.can_cast(found, spec.np_dtype, "safe"))


def _unbatched(ndim: int, spec: TensorSpec, batched: bool) -> bool:
    """Whether an array is one sample without its batch axis: one axis short of the input, unless the
    array is known to be batched (a single calibration file, whose first axis is always the samples)."""
    return ndim == 0 or (not batched and ndim == len(spec.shape) - 1)


def _batch_len(shapes: Mapping[str, tuple], specs: list[TensorSpec], where: str, batched: bool = False) -> int:
    """How many samples a file or item holds: its arrays' first axis, which every input must share."""
    sizes = {s.name: 1 if _unbatched(len(shapes[s.name]), s, batched) else shapes[s.name][0] for s in specs if s.name in shapes}
    if len(set(sizes.values())) > 1:
        raise SpecError(f"{where}: the inputs hold different numbers of samples ({', '.join(f'{k}: {v}' for k, v in sizes.items())}); give every input the same first axis")
    return next(iter(sizes.values()), 1)


def _take(arrays: Mapping[str, np.ndarray], specs: list[TensorSpec], j: int, batched: bool = False) -> Sample:
    """Sample ``j`` of a batch, each array keeping a batch axis of 1 (a view, not a copy)."""
    return {
        s.name: arrays[s.name][None] if _unbatched(arrays[s.name].ndim, s, batched) else arrays[s.name][j:j + 1]
        for s in specs if s.name in arrays
    }


def _label(where: str, j: int, n: int) -> str:
    return where if n == 1 else f"{where}, sample {j}"


# -- .txt sentences --------------------------------------------------------------------------------------

class _TextLines(_IndexedSource):
    """Sentences, one a line, tokenized together up front (text is small) so every sample has one sequence
    length, the longest (or the one ``text`` fixes): samples stack into batches."""

    def __init__(self, path: Path, specs: list[TensorSpec], text: Callable[[list[str]], Sample]):
        super().__init__(specs, str(path))
        lines = read_lines(path)
        self._feeds = {k: np.asarray(v) for k, v in text(lines).items()}
        width = next(iter(self._feeds.values())).shape[-1] if self._feeds else 0
        self._counted(len(lines), f"{path} ({len(lines)} sentences, tokenized to {width} tokens)")

    def _sample(self, i):
        return f"{self.name}, sentence {i + 1}", {k: v[i:i + 1] for k, v in self._feeds.items()}


# -- .npy / .npz files ---------------------------------------------------------------------------------

class _ArrayFiles(_IndexedSource):
    """A .npy/.npz file (first axis: the samples) or a folder of them (each file one sample or a batch).

    Samples are read from disk on demand (``_Rows``) and only one file is open at a time; compressed .npz
    members cannot be read by offset and are loaded whole, one file at a time.
    """

    def __init__(self, files: list[Path], specs: list[TensorSpec], name: str, folder: bool):
        super().__init__(specs, name)
        self._files = files
        self._batched = not folder
        self._ends = np.cumsum([_batch_len(array_shapes(f, self.specs), self.specs, str(f), self._batched) for f in files])
        self._open: tuple[int, dict[str, np.ndarray]] = (-1, {})
        count = int(self._ends[-1])
        if folder:
            description = f"{name}/ ({len(files)} .npy/.npz files, {count} samples)"
        elif _compressed(files[0]):
            description = f"{name} ({count} samples; compressed, so read whole into memory: save it with np.savez to stream it)"
        else:
            description = f"{name} ({count} samples, streamed from disk)"
        self._counted(count, description)

    def _sample(self, i):
        k = int(np.searchsorted(self._ends, i, side="right"))
        if self._open[0] != k:
            self._open = (k, read_arrays(self._files[k], self.specs))
        start = int(self._ends[k - 1]) if k else 0
        return _label(str(self._files[k]), i - start, int(self._ends[k]) - start), _take(self._open[1], self.specs, i - start, self._batched)


def array_shapes(path: Path, specs: list[TensorSpec]) -> dict[str, tuple]:
    """Each input's array shape in ``path``, read from the headers alone."""
    if path.suffix.lower() == ".npy":
        _one_input(path, specs)
        with open(path, "rb") as f:
            return {specs[0].name: _npy_header(f, path, path.stat().st_size)[0]}
    with _zip(path) as archive:
        shapes = {}
        for name, info in _npz_members(archive, specs, path).items():
            with archive.open(info) as member:
                shapes[name] = _npy_header(member, f"{path}:{info.filename}", info.file_size)[0]
        return shapes


class _Rows:
    """An on-disk C-order array whose rows are read on demand. Unlike a memory map, nothing read stays
    resident in the process, so peak memory does not grow with the number of samples read."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, shape: tuple):
        self.path, self.offset, self.dtype, self.shape = path, offset, dtype, tuple(shape)
        self.ndim = len(self.shape)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * dtype.itemsize

    def __getitem__(self, index) -> np.ndarray:
        if index is None:  # the whole array, as one sample
            return self._read(0, self.shape[0] if self.shape else 1)[None] if self.shape else self._scalar()
        return self._read(index.start, index.stop)

    def _read(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self._row_bytes)
            data = f.read((stop - start) * self._row_bytes)
        return np.frombuffer(data, self.dtype).reshape((stop - start, *self.shape[1:]))

    def _scalar(self) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return np.frombuffer(f.read(self.dtype.itemsize), self.dtype).reshape(())


def _stored(path: Path, offset: int, shape: tuple, fortran: bool, dtype: np.dtype):
    """Rows read on demand; a Fortran-order array (rows not contiguous) is memory-mapped instead."""
    if fortran and len(shape) > 1:
        return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F", offset=offset)
    return _Rows(path, offset, dtype, shape)


def read_arrays(path: Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Each input's array in ``path``, read row by row on demand, except compressed .npz members."""
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as f:
            shape, fortran, dtype = _npy_header(f, path, path.stat().st_size)
            offset = f.tell()
        return {specs[0].name: _stored(path, offset, shape, fortran, dtype)}
    with _zip(path) as archive:
        return {name: _member_array(path, archive, info) for name, info in _npz_members(archive, specs, path).items()}


def _one_input(path: Path, specs: list[TensorSpec]) -> None:
    if len(specs) != 1:
        names = ", ".join(s.name for s in specs)
        raise InputError(f"{path} holds one array but the model takes {len(specs)} inputs ({names}); use .npz files with one array per input name")


def _npz_members(archive: zipfile.ZipFile, specs: list[TensorSpec], path: Path) -> dict[str, zipfile.ZipInfo]:
    members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
    missing = [s.name for s in specs if s.name not in members]
    if missing:
        raise InputError(
            f"{path} lacks array(s) for input(s) {', '.join(map(repr, missing))} (it holds: {', '.join(members) or 'none'}); "
            f"save one array per input name, e.g. np.savez(file, {missing[0]}=...)"
        )
    return {s.name: members[s.name] for s in specs}


def _compressed(path: Path) -> bool:
    if path.suffix.lower() == ".npy":
        return False
    with _zip(path) as archive:
        return any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist())


@contextlib.contextmanager
def _zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """The .npz archive at ``path``; a damaged archive or member, found while reading it, fails with its name."""
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise InputError(f"{path} is not a valid .npz archive ({first_line(exc)}); write it with np.savez") from exc


def _npy_header(fp, path, size: int) -> tuple[tuple, bool, np.dtype]:
    """Shape, Fortran order and dtype from the header of a .npy stream of ``size`` bytes, without reading
    the data; a header that claims more data than the stream holds (truncated or forged) is refused."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        # Version 3.0 differs from 2.0 only by allowing UTF-8 in field names of structured dtypes.
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(fp)
    except (ValueError, EOFError) as exc:
        raise InputError(f"{path} is not a valid .npy array ({first_line(exc)}); write it with np.save or np.savez") from exc
    if dtype.hasobject:
        raise InputError(f"{path} holds Python objects, which only pickle can read; save text as a string array (np.array(values, dtype=str))")
    claimed, held = math.prod(shape) * dtype.itemsize, size - fp.tell()
    # numpy refuses any shape whose nonzero sides multiply past its index range, even with a zero side
    # (a 10^18 x 0 x 10^18 array holds no bytes but cannot be made).
    impossible = math.prod(d for d in shape if d > 0) * dtype.itemsize > sys.maxsize
    if min(shape, default=0) < 0 or claimed > held or impossible:
        raise InputError(f"{path} is truncated or damaged: its header claims a {format_shape(shape)} {dtype} array "
                         f"({claimed} bytes) but {held} bytes follow it; write it again with np.save or np.savez")
    return shape, fortran, dtype


def read_npy(path: str | Path) -> np.ndarray:
    """A whole .npy file, its header checked first: never a pickle, never more than the file holds."""
    path = regular_file(path)
    with open(path, "rb") as f:
        _npy_header(f, path, path.stat().st_size)
        f.seek(0)
        try:
            return np.lib.format.read_array(f, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path} is not a valid .npy array ({first_line(exc)}); write it with np.save") from exc


def _member_array(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """An .npz member, read in place row by row when stored uncompressed (np.savez), else read whole."""
    where = f"{path}:{info.filename}"
    with archive.open(info) as member:
        shape, fortran, dtype = _npy_header(member, where, info.file_size)
        header_size = member.tell()
    if info.compress_type != zipfile.ZIP_STORED:
        try:
            with archive.open(info) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        except ValueError as exc:  # fewer bytes than the header claims
            raise InputError(f"{where} is truncated or damaged ({first_line(exc)}); write it again with np.savez") from exc
        except MemoryError as exc:
            raise InputError(f"{where} is too large to decompress into memory ({first_line(exc)}); save it uncompressed "
                             "with np.savez, which edgeml streams from disk") from exc
    start = _member_offset(path, info) + header_size
    if start + math.prod(shape) * dtype.itemsize > path.stat().st_size:
        raise InputError(f"{where} is truncated: its data runs past the end of {path}; write it again with np.savez")
    return _stored(path, start, shape, fortran, dtype)


def _member_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start in the file: after its local header (30 bytes, name, extra)."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise InputError(f"{path} is a damaged .npz archive (member {info.filename}); write it again with np.savez")
    name_size, extra_size = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_size + extra_size


# -- images ----------------------------------------------------------------------------------------------

class _ImageFolder(_IndexedSource):
    """PNG/JPEG files for a model with one image input, decoded and preprocessed one at a time."""

    def __init__(self, folder: Path, files: list[Path], specs: list[TensorSpec], options: ImageOptions):
        super().__init__(specs, str(folder))
        if len(specs) != 1 or len(specs[0].shape) != 4:
            raise InputError(
                f"a folder of images calibrates a model with one image input (N, C, H, W) or (N, H, W, C); this model takes "
                f"{', '.join(map(str, specs))}: save its inputs as .npz instead"
            )
        self._pil = _pillow()
        self._spec = spec = specs[0]
        nchw = options.layout == "NCHW"
        channels, height, width = (spec.shape[1], spec.shape[2], spec.shape[3]) if nchw else (spec.shape[3], spec.shape[1], spec.shape[2])
        if channels not in (1, 3) and isinstance(channels, int):
            raise InputError(
                f"input {spec} has {channels} channels in {options.layout} layout, but images give 1 (grayscale) or 3 (RGB); "
                f"set the layout to {'NHWC' if nchw else 'NCHW'} if the model takes channels {'last' if nchw else 'first'}"
            )
        self._mode = "L" if channels == 1 else "RGB"
        for stat, values in (("mean", options.mean), ("std", options.std)):
            if values is not None and len(values) not in (1, len(self._mode)):
                raise InputError(f"{stat} has {len(values)} values but the images have {len(self._mode)} channel(s) ({self._mode}); give one per channel")
        fixed = isinstance(height, int) and isinstance(width, int)
        self.options = replace(options, resize=options.resize or ((height, width) if fixed else None))
        self.preprocessing = {**self.options.to_dict(), "color": self._mode, "resample": "bilinear"}
        self._files = files
        self._counted(len(files), f"{folder}/ ({len(files)} PNG/JPEG files)")

    def _sample(self, i):
        path = self._files[i]
        pixels = _decode(self._pil, path, self._mode, self.options.resize)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        pixels = self.options.normalize(pixels)
        if self.options.layout == "NCHW":
            pixels = pixels.transpose(2, 0, 1)
        return str(path), {self._spec.name: pixels[None]}


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise BackendMissing(f"reading calibration images needs Pillow ({exc}); install it with: pip install pillow") from exc
    return Image


def _decode(pil, path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as float32 (H, W) or (H, W, 3) pixels, converted to ``mode`` and resized to ``size`` (H, W)."""
    try:
        with pil.open(path) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), pil.Resampling.BILINEAR)
            return np.array(image, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds of error for a broken file
        raise InputError(f"cannot read image {path} ({first_line(exc)}); replace or remove the file") from exc


# -- CSV ----------------------------------------------------------------------------------------------------

class _CsvRows(_StreamedSource):
    """A CSV for tabular models, one sample per row, read ``CSV_CHUNK_ROWS`` rows at a time."""

    def __init__(self, path: Path, specs: list[TensorSpec]):
        super().__init__(specs, str(path))
        self._pd = require("pandas", "sklearn")
        self._path = path
        header = list(self._csv(nrows=0).columns)
        self._columns = _csv_columns(header, self.specs, path)
        self._text = [c for s in self.specs if s.dtype == "str" for c in self._columns[s.name]]
        self._usecols = list(dict.fromkeys(c for cols in self._columns.values() for c in cols))
        count = sum(len(chunk) for chunk in self._chunks(None))  # every column: a row with extra fields is an error
        self._counted(count, f"{path} ({count} rows)")

    def _csv(self, **options):
        try:
            return self._pd.read_csv(self._path, **options)
        except ValueError as exc:  # pandas' parser and empty-data errors are ValueErrors
            raise InputError(f"cannot read {self._path} as CSV ({first_line(exc)}); give a CSV with a header row naming the inputs") from exc

    def _chunks(self, columns: list[str] | None) -> Iterator[Any]:
        text = {c: str for c in self._text if columns is None or c in columns}
        reader = self._csv(usecols=columns, dtype=text, chunksize=CSV_CHUNK_ROWS)
        try:
            with reader:
                yield from reader
        except ValueError as exc:
            raise InputError(f"cannot read {self._path} as CSV ({first_line(exc)}); fix the file") from exc

    def _stream(self):
        row = 0
        for chunk in self._chunks(self._usecols):
            arrays = {s.name: self._values(chunk, s) for s in self.specs}
            for j in range(len(chunk)):
                row += 1
                yield f"{self._path}, row {row}", {name: values[j:j + 1] for name, values in arrays.items()}

    def _values(self, chunk, spec: TensorSpec) -> np.ndarray:
        """The input's columns of a chunk as (rows, k), or (rows,) for a rank-1 input; text as objects."""
        columns = self._columns[spec.name]
        if spec.dtype == "str":
            values = np.column_stack([text_values(chunk[c]) for c in columns])
        else:
            values = chunk[columns].to_numpy()
        return values[:, 0] if len(spec.shape) == 1 else values


def _csv_columns(header: list[str], specs: list[TensorSpec], path: Path) -> dict[str, list[str]]:
    """Each input's columns: ``NAME`` for one value per row, ``NAME_0..NAME_{k-1}`` for k; a lone input
    with no column of its name takes every column, in order."""
    plan, missing = {}, []
    for spec in specs:
        if len(spec.shape) not in (1, 2):
            raise InputError(f"{path}: a CSV row fits an input of shape (batch, k), but input {spec.name!r} is {format_shape(spec.shape)}; give .npz files instead")
        plan[spec.name] = _input_columns(spec, header)
        missing += [c for c in plan[spec.name] if c not in header]
    if len(specs) == 1 and missing == plan[specs[0].name]:
        return {specs[0].name: header}
    if missing:
        shown = ", ".join(map(repr, header[:8])) + (", ..." if len(header) > 8 else "")
        raise InputError(
            f"{path} lacks column(s) {', '.join(map(repr, missing))} for the model's inputs "
            f"({', '.join(map(str, specs))}); name columns NAME or NAME_0, NAME_1, ... after the inputs (it has: {shown})"
        )
    return plan


def _input_columns(spec: TensorSpec, header: list[str]) -> list[str]:
    k = spec.shape[1] if len(spec.shape) == 2 else 1
    if k == 1 or (isinstance(k, str) and spec.name in header):
        return [spec.name]
    if isinstance(k, int):
        return [f"{spec.name}_{i}" for i in range(k)]
    pattern = re.compile(re.escape(spec.name) + r"_(\d+)")
    numbered = sorted((int(m.group(1)), c) for c in header if (m := pattern.fullmatch(c)))
    return [c for _, c in numbered] or [spec.name]


# -- a user's function --------------------------------------------------------------------------------

class _FunctionSource(_StreamedSource):
    """A function returning an iterable of ``{input name: array}`` dicts, each a sample or a batch.

    It is called once to count the samples and again for every pass over them (calibration, evaluation),
    so it must give the same items each time, e.g. by reading files rather than a one-shot generator.
    """

    def __init__(self, function: Callable[[], Iterable], name: str, specs: list[TensorSpec]):
        super().__init__(specs, name)
        self._function = function
        count = sum(1 for _ in self._stream())
        self._counted(count, f"{name} ({count} samples; the function is called again for every pass)")

    def _stream(self):
        count = 0
        for k, item in enumerate(self._items()):
            where = f"{self.name} item {k}"
            if not isinstance(item, Mapping):
                raise InputError(f"{where} is a {type(item).__name__}, not a dict; yield {{input name: array}} dicts, e.g. {{{self.specs[0].name!r}: batch}}")
            arrays = {s.name: to_numpy(item[s.name], s.name) for s in self.specs if s.name in item}
            n = _batch_len({name: a.shape for name, a in arrays.items()}, self.specs, where)
            count += max(n, 1)  # an empty batch counts too, so that endless empty items end
            if count > MAX_FUNCTION_SAMPLES:
                raise InputError(
                    f"calibration function {self.name} gives more than {MAX_FUNCTION_SAMPLES} samples (does it ever end?); "
                    "edgeml reads at most edgeml.datafiles.MAX_FUNCTION_SAMPLES from a function: return fewer "
                    "(e.g. itertools.islice(items, 1000)) or raise that limit"
                )
            for j in range(n):
                yield _label(where, j, n), _take(arrays, self.specs, j)

    def _items(self) -> Iterator[Any]:
        """The function's items; its own failures become one-line errors (the traceback stays chained)."""
        try:
            items = self._function()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code fails in every way, sys.exit() too
            raise self._failed(exc) from exc
        if isinstance(items, Mapping) or not isinstance(items, Iterable):
            raise InputError(f"{self.name} returned a {type(items).__name__}; return (or yield) an iterable of {{input name: array}} dicts")
        iterator = iter(items)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except (Exception, SystemExit) as exc:  # noqa: BLE001
                raise self._failed(exc) from exc
            yield item

    def _failed(self, exc: BaseException) -> InputError:
        return InputError(f"calibration function {self.name} failed ({type(exc).__name__}: {first_line(exc)}); fix it, or call it yourself to see the traceback")


_REFERENCE = re.compile(r"(?P<target>.+):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
_MODULE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def _load_function(reference: str) -> Callable:
    """``file.py:function`` or ``module:function`` to the function, importing from the current folder too."""
    match = _REFERENCE.fullmatch(reference)
    target = match["target"] if match else ""
    if not (target.endswith(".py") or _MODULE.fullmatch(target)):
        raise InputError(f"calibration data {reference!r} is neither an existing file or folder nor a function written as file.py:function or module:function; check the path")
    if target.endswith(".py"):
        regular_file(target, "calibration script")
    try:
        with cwd_importable():
            module = _import_file(Path(target)) if target.endswith(".py") else importlib.import_module(target)
    except Exception as exc:  # noqa: BLE001 - importing user code fails in every way
        raise InputError(
            f"cannot import {target!r} for calibration data ({type(exc).__name__}: {first_line(exc)}); "
            "run edgeml from the folder that holds it, or install its package"
        ) from exc
    function = module
    for part in match["attr"].split("."):
        function = getattr(function, part, None)
    if function is None:
        raise InputError(f"{target} has no {match['attr']!r} for calibration data; name a function defined there")
    if not callable(function):
        raise InputError(f"{reference} is a {type(function).__name__}, not a function; name a function returning an iterable of {{input name: array}} dicts")
    return function


def _import_file(path: Path):
    """A Python file as a module (registered in sys.modules, as classes and pickling within it expect)."""
    name = f"edgeml_calibration_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
