"""Latency statistics over per-iteration samples in nanoseconds.

- Percentiles use the nearest-rank method, as trtexec does: the reported value is one that was measured.
- The gate judges a *conservative* percentile: the order statistic that bounds the true percentile from
  above with 99% confidence, by the binomial rule of MLPerf LoadGen's early stopping. With n samples and
  q = 1 - p the share allowed above the percentile, t is the largest count with
  P(Binomial(n, q) <= t) <= 1 - confidence; as LoadGen does, the t - 1 largest samples are discarded and
  the estimate is the largest sample left. t must be at least 1, which sets the minimum run (p90: 64
  samples, p99: 662); at 2048 samples the p90 estimate discards 172, as LoadGen reports.
- Regressions are judged significant with a one-sided Mann-Whitney U test on the raw samples.
- A/B ratios get a confidence interval from per-block ratios (a sign-test interval on their median).
"""

from __future__ import annotations

import math

import numpy as np

#: Percentiles every summary reports.
PERCENTILES = (50, 90, 95, 99, 99.9)
CONFIDENCE = 0.99


def nearest_rank(sorted_values, q: float):
    """The ``q``-th percentile (0 < q <= 100) of ascending ``sorted_values``, by nearest rank."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is outside (0, 100]")
    rank = max(1, math.ceil(round(q / 100 * n, 9)))
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


def _log_binomial_cdf_steps(n: int, q: float):
    """Yield (t, log P(Binomial(n, q) <= t)) for t = 0, 1, 2, ... (log space: n can be large)."""
    log_pmf = n * math.log1p(-q)
    log_cdf = log_pmf
    ratio = math.log(q) - math.log1p(-q)
    t = 0
    while True:
        yield t, log_cdf
        if t >= n:
            return
        log_pmf += math.log(n - t) - math.log(t + 1) + ratio
        t += 1
        log_cdf = log_cdf + math.log1p(math.exp(log_pmf - log_cdf)) if log_pmf < log_cdf else log_pmf + math.log1p(math.exp(log_cdf - log_pmf))


def discardable(n: int, percentile: float, confidence: float = CONFIDENCE) -> int:
    """How many of the largest samples LoadGen's rule drops before taking the largest one left as the
    conservative ``percentile``; 0 also when there are too few samples (see ``min_samples``)."""
    q = 1 - percentile / 100
    if q <= 0 or n <= 0:
        return 0
    limit = math.log(1 - confidence)
    best = 0
    for t, log_cdf in _log_binomial_cdf_steps(n, q):
        if log_cdf > limit:
            break
        best = t
    return max(best - 1, 0)


def min_samples(percentile: float, confidence: float = CONFIDENCE) -> int | None:
    """The fewest samples for a conservative estimate (P(Bin(n, q) <= 1) <= 1 - c); None for p100."""
    q = 1 - percentile / 100
    if q <= 0:
        return None
    # P(Bin(n, q) <= 1) = (1-q)^n + n q (1-q)^(n-1) falls with n: search upward from the t=0 bound.
    n = max(2, math.ceil(math.log(1 - confidence) / math.log1p(-q)))
    while (1 - q) ** n + n * q * (1 - q) ** (n - 1) > 1 - confidence:
        n += 1
    return n


def conservative_percentile(sorted_values, percentile: float, confidence: float = CONFIDENCE) -> dict:
    """The conservative estimate of ``percentile`` from ascending samples, and how it was reached."""
    n = len(sorted_values)
    needed = min_samples(percentile, confidence)
    if needed is None:  # p100 is the max: nothing to bound
        return {"value": sorted_values[-1], "discarded": 0, "min_samples": 1, "enough": True, "confidence": confidence}
    t = discardable(n, percentile, confidence)
    enough = needed is not None and n >= needed
    value = sorted_values[n - 1 - t] if enough else sorted_values[-1]
    return {"value": value, "discarded": t if enough else 0, "min_samples": needed, "enough": enough,
            "confidence": confidence}


def mann_whitney_greater(current, baseline) -> float:
    """One-sided p-value that ``current`` tends to be larger (slower) than ``baseline``.

    Mann-Whitney U with average ranks for ties, tie-corrected normal approximation (fine for the
    hundreds of samples a latency run has).
    """
    a = np.asarray(current, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("no samples")
    combined = np.concatenate([a, b])
    order = np.argsort(combined, kind="mergesort")
    ranks = np.empty(len(combined))
    sorted_values = combined[order]
    # average ranks over runs of equal values
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(combined)]])
    average = (starts + ends + 1) / 2.0  # ranks are 1-based: run [s, e) has ranks s+1..e
    ranks[order] = np.repeat(average, ends - starts)
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    mean = n1 * n2 / 2.0
    tie_sizes = (ends - starts).astype(np.float64)
    n = n1 + n2
    variance = n1 * n2 / 12.0 * ((n + 1) - (tie_sizes**3 - tie_sizes).sum() / (n * (n - 1)))
    if variance <= 0:
        return 0.5
    z = (u - mean - 0.5) / math.sqrt(variance)  # continuity correction
    return 0.5 * math.erfc(z / math.sqrt(2))


def ratio_interval(ratios, confidence: float = 0.95) -> tuple[float, float, float]:
    """Median of per-block ratios and a distribution-free interval for it (sign-test order statistics)."""
    r = np.sort(np.asarray(ratios, dtype=np.float64))
    k = len(r)
    if k == 0:
        raise ValueError("no blocks")
    median = float(np.median(r))
    # Largest j with P(Bin(k, 1/2) < j) <= (1 - confidence) / 2: the interval is [r_(j), r_(k-j+1)].
    alpha = (1 - confidence) / 2
    j, cdf, pmf = 0, 0.0, 0.5**k
    while j < k and cdf + pmf <= alpha:
        cdf += pmf
        pmf *= (k - j) / (j + 1)
        j += 1
    if j == 0:
        return median, float(r[0]), float(r[-1])
    return median, float(r[j - 1]), float(r[k - j])
