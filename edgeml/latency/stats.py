"""Latency statistics over per-call samples in nanoseconds: percentiles, spread, own time, the gate.

- Percentiles use the nearest-rank method, as trtexec does: the reported value is one that was measured.
- **Own time.** Each call is timed on the wall clock and by the time its thread was kept waiting for a CPU
  (Linux counts it per thread: the run-queue delay; elsewhere wall - CPU time stands in for it). The
  waiting is partly constant (base: the 5th percentile over the run's calls) and the rest is time the
  scheduler gave to other work. A call's own time is its wall time less that rest (when over 10 us: less is
  clock jitter or an interrupt); a call that lost more than 10% of its own time that way was *descheduled*.
  With the run-queue delay, a call that waits on its own (sleeping, a blocking join) keeps its wall time.
- **The gate** judges a conservative estimate of a percentile on the run's quietest stretch: the run is cut
  into 5 consecutive blocks; each block gives the order statistic that bounds the true percentile from above
  with 99.8% confidence (the binomial rule of MLPerf LoadGen's early stopping: with n samples and
  q = 1 - p, t is the largest count with P(Binomial(n, q) <= t) <= 1 - confidence, the t - 1 largest are
  dropped and the largest one left is the bound); the gate takes the lowest of the 5 bounds. On a steady
  machine all 5 are at or above the true percentile with probability 0.998^5 = 0.99: a 99% upper bound, as
  one bound over the whole run would be. When other work comes and goes, the lowest bound is the one of the
  block the machine disturbed least: a neighbour's burst slows some blocks, a regression in the model slows
  every block. A run is long enough when each block's bound is not its slowest call (p90: 5 x 100 samples,
  p99: 5 x 1035); a shorter one (a slow model under --max-seconds) is gated on one 99% bound over all its
  calls, or on its slowest call when even that is too few: never on the lowest of the blocks' maxima.
- The noise flag uses a robust spread, the interquartile range over the median: a few stalls, which dominate
  the standard deviation, do not raise it.
- Regressions are judged significant with a one-sided Mann-Whitney U test on the raw samples.
- A/B ratios get a confidence interval from per-block ratios (a sign-test interval on their median).
"""

from __future__ import annotations

import math

import numpy as np

#: Percentiles every summary reports.
PERCENTILES = (50, 90, 95, 99, 99.9)
#: Confidence of the gate's upper bound, and of each block's bound: the lowest of 5 bounds at 0.99^(1/5) each
#: (99.8%) is a 99% bound.
CONFIDENCE = 0.99
BLOCKS = 5
BLOCK_CONFIDENCE = CONFIDENCE ** (1 / BLOCKS)
#: How the gated value is made, for verdicts, reports and --help.
GATE_RULE = (f"the lowest of {BLOCKS} consecutive blocks' {BLOCK_CONFIDENCE:.1%} upper bounds on the percentile "
             f"(a {CONFIDENCE:.0%} bound on the run's quietest stretch)")
#: The percentile of off-CPU time taken as the runtime's own waiting in a call, not the scheduler's, and
#: the excess over it below which a call keeps its wall time (clock jitter, an interrupt: not a deschedule).
BASE_PERCENTILE = 5
JITTER_NS = 10_000
#: A call lost more than this share of its own time to other work: it was descheduled.
DESCHEDULED = 0.10


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
    """'p99.9' for 99.9: every digit given (15 significant), so that p99.9999999 is not shown as p100."""
    return f"p{q:.15g}"


def spread(sorted_values) -> float:
    """The interquartile range over the median, (p75 - p25) / p50 by nearest rank: robust to rare stalls."""
    median = float(nearest_rank(sorted_values, 50))
    iqr = float(nearest_rank(sorted_values, 75)) - float(nearest_rank(sorted_values, 25))
    return iqr / median if median > 0 else 0.0


def summarize(samples_ns, batch: int = 1, extra_percentiles=()) -> dict:
    """min/max/mean/std/CoV, the robust spread and percentiles in milliseconds, and throughput per second."""
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
        "spread": spread(values),
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


def _fewest(holds, low: int) -> int:
    """The smallest n >= low for which ``holds(n)``, a test that turns true for good as n grows."""
    high = low
    while not holds(high):
        low, high = high + 1, 2 * high
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if holds(middle) else (middle + 1, high)
    return low


def min_samples(percentile: float, confidence: float = CONFIDENCE) -> int | None:
    """The fewest samples for a conservative estimate (P(Bin(n, q) <= 1) <= 1 - c); None for p100."""
    q = 1 - percentile / 100
    if q <= 0:
        return None
    log_keep = math.log1p(-q)  # P(Bin(n, q) <= 1) = (1-q)^n + n q (1-q)^(n-1) falls with n
    return _fewest(lambda n: math.exp(n * log_keep) + n * q * math.exp((n - 1) * log_keep) <= 1 - confidence, 2)


def block_samples(percentile: float, confidence: float = BLOCK_CONFIDENCE) -> int:
    """The fewest samples for a bound on ``percentile`` that is not the slowest sample (one is dropped)."""
    needed = min_samples(percentile, confidence)
    return 1 if needed is None else _fewest(lambda n: discardable(n, percentile, confidence) >= 1, needed)


def gate_samples(percentile: float) -> int:
    """The fewest samples for the gate: ``BLOCKS`` blocks whose bounds are not their slowest call (p100: 1)."""
    return 1 if percentile >= 100 else BLOCKS * block_samples(percentile)


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


def own_times(wall_ns, cpu_ns) -> np.ndarray:
    """Each call's wall time less the time other work had its thread; ``cpu_ns``: wall less the run-queue
    delay (``timing.timed_calls``), or the thread's CPU time. Off-CPU time (wall - cpu) up to base,
    the value that 5% of calls stay under, is the runtime's own waiting; a call that waited longer than base
    by more than ``JITTER_NS`` was descheduled and is billed ``cpu + base``; any other call its wall time."""
    wall = np.asarray(wall_ns, dtype=np.int64)
    cpu = np.asarray(cpu_ns, dtype=np.int64)
    off = wall - cpu
    base = nearest_rank(np.sort(off), BASE_PERCENTILE)
    return np.where(off - base > JITTER_NS, cpu + base, wall)


def descheduled(wall_ns, own_ns) -> np.ndarray:
    """Which calls lost more than ``DESCHEDULED`` of their own time to other work on the machine."""
    wall = np.asarray(wall_ns, dtype=np.float64)
    own = np.asarray(own_ns, dtype=np.float64)
    return wall - own > DESCHEDULED * own


def block_gate(samples_ns, percentile: float) -> dict:
    """The gated value: the lowest of ``BLOCKS`` consecutive blocks' bounds on ``percentile`` (``GATE_RULE``),
    with how each block got its bound. p100 has nothing to bound: one block, its max."""
    samples = np.asarray(samples_ns)
    blocks = np.array_split(samples, 1 if percentile >= 100 else min(BLOCKS, len(samples)))
    bounds = [conservative_percentile(np.sort(block), percentile, BLOCK_CONFIDENCE) for block in blocks]
    chosen = min(range(len(blocks)), key=lambda i: bounds[i]["value"])
    gate = {"value": float(bounds[chosen]["value"]), "blocks": len(blocks), "chosen_block": chosen,
            "block_values": [float(b["value"]) for b in bounds], "block_calls": [len(b) for b in blocks],
            "discarded": bounds[chosen]["discarded"], "min_samples": bounds[chosen]["min_samples"],
            "block_samples": block_samples(percentile), "enough": all(b["enough"] for b in bounds),
            "confidence": CONFIDENCE if len(blocks) == BLOCKS else None, "pooled": False}
    if not gate["enough"] and len(blocks) > 1:
        # The lowest of blocks too short for a bound would be the lowest of their maxima: optimistic. One bound
        # over the whole run instead (its slowest call when even that is too short).
        pooled = conservative_percentile(np.sort(samples), percentile, CONFIDENCE)
        gate.update(value=float(pooled["value"]), chosen_block=None, discarded=pooled["discarded"],
                    min_samples=pooled["min_samples"], pooled=True, pooled_enough=pooled["enough"])
    return gate


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
