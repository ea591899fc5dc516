"""pytest helpers: a latency gate as one assertion in a project's own test suite.

    from edgeml.testing import assert_latency

    def test_model_is_fast_enough():
        assert_latency("build/model.int8.onnx", budget_ms=100)              # p90 by default; percentile=99
"""

from __future__ import annotations

import os


def assert_latency(artifact: str | os.PathLike, budget_ms: float, percentile: float = 90, **bench_options):
    """Bench ``artifact`` and fail (AssertionError) when its gated percentile is over budget (or, with a
    ``baseline``, when it regressed); the message is the verdict and the numbers behind it.

    ``bench_options`` are those of ``edgeml.bench`` (``batch``, ``threads``, ``method``, ``baseline``...).
    Returns the BenchResult, for further assertions.
    """
    from .latency.reports import details
    from .latency.runner import bench

    result = bench(artifact, budget_ms=budget_ms, percentile=percentile, **bench_options)
    if not result.passed:
        raise AssertionError(f"{result.name}: " + details(result).replace("\n", "; "))
    return result
