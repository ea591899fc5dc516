"""Input arrays for checks and benchmarks: generated from specs with a fixed seed, or read from a file."""

from __future__ import annotations

import itertools

import numpy as np

from .errors import InputError, SpecError
from .spec import TensorSpec, check_input_bytes

DEFAULT_SEED = 0
#: Size given to symbolic dims other than the batch (a sequence length, an image side) in generated data.
OTHER_DIM = 8


def random_feeds(specs: list[TensorSpec], batch: int = 1, seed: int = DEFAULT_SEED, other: int = OTHER_DIM) -> dict[str, np.ndarray]:
    """Deterministic inputs for ``specs``: standard normal floats, small non-negative integers, random bools.

    Their size is checked against the limit (``spec.check_input_bytes``) before anything is allocated.
    """
    check_input_bytes(specs, batch, other, what=f"generated inputs at batch {batch}")
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = spec.concrete_shape(batch=batch, other=other)
        dtype = spec.np_dtype
        if dtype.kind == "f":
            feeds[spec.name] = np.asarray(rng.standard_normal(shape), dtype=dtype)
        elif dtype.kind in "iub":
            feeds[spec.name] = np.asarray(rng.integers(0, 2, size=shape), dtype=dtype)
        else:
            raise SpecError(
                f"cannot generate values for text input {spec.name!r}; give real rows with --data FILE (or --sample for scikit-learn)"
            )
    return feeds


def read_feeds(path, specs: list[TensorSpec], limit: int | None = None) -> dict[str, np.ndarray]:
    """Real inputs, one batch per input: any calibration source (``.npy``, ``.npz``, ``.csv``, a folder of
    arrays or images, ``file.py:function``), its samples stacked, the first ``limit`` of them."""
    from .calibration.sources import open_source

    return stack_samples(itertools.islice(iter(open_source(path, specs)), limit), str(path))


def stack_samples(samples, origin: str = "the data") -> dict[str, np.ndarray]:
    """Samples of batch 1 stacked into one batch per input."""
    items = list(samples)
    if not items:
        raise InputError(f"{origin} holds no samples; give at least one")
    return {name: np.concatenate([s[name] for s in items]) for name in items[0]}


def sample_count(feeds) -> int:
    """How many samples ``feeds`` hold along their first axis; inputs without one (scalars), or no inputs at
    all, make one sample."""
    return min((len(v) for v in feeds.values() if np.ndim(v)), default=1)
