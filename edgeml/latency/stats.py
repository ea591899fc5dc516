"""Latency statistics over per-iteration samples in nanoseconds.

Percentiles use the nearest-rank method (as trtexec does): the reported value is one that was measured.
"""

from __future__ import annotations

import math

import numpy as np

#: Percentiles every summary reports.
PERCENTILES = (50, 90, 95, 99)


def nearest_rank(sorted_values, q: float):
    """The ``q``-th percentile (0 < q <= 100) of ascending ``sorted_values``, by nearest rank."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is outside (0, 100]")
    rank = max(1, math.ceil(q / 100 * n))
    return sorted_values[rank - 1]


def percentile_key(q: float) -> str:
    return f"p{q:g}"


def summarize(samples_ns, batch: int = 1, extra_percentiles=()) -> dict:
    """min/max/mean/std/CoV and percentiles in milliseconds, and throughput in samples per second."""
    values = np.sort(np.asarray(samples_ns, dtype=np.float64)) / 1e6
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    summary = {
        "count": int(len(values)),
        "min_ms": float(values[0]),
        "max_ms": float(values[-1]),
        "mean_ms": mean,
        "std_ms": std,
        "cov": std / mean if mean > 0 else 0.0,
    }
    for q in sorted(set(PERCENTILES) | set(extra_percentiles)):
        summary[f"{percentile_key(q)}_ms"] = float(nearest_rank(values, q))
    summary["throughput_per_s"] = batch * 1e3 / mean if mean > 0 else float("inf")
    return summary
