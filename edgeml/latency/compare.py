"""Comparisons: against a stored baseline (regression gate) and against another artifact (interleaved A/B).

A regression fails the gate only when it is both larger than the threshold and significant, so that
the noise of a shared CI runner does not flap it (the rule asv uses). An A/B run interleaves the two
artifacts in short blocks within one process, so that drift hits both alike.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from .stats import mann_whitney_greater, ratio_interval

#: One-sided significance level of the regression test.
ALPHA = 0.01
#: An A/B block lasts about this long and its first tenth is not kept: worker threads of the side that ran
#: before keep spinning for a while, and would otherwise be billed to this one.
BLOCK_MS = 300.0
SETTLE = 0.1
MIN_BLOCKS = 10


def load_baseline(baseline, artifact, batch: int, threads) -> dict:
    """The baseline entry for this artifact, batch and threads, with its raw samples and fingerprint."""
    if isinstance(baseline, dict):
        document = baseline
    else:
        path = Path(baseline)
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise InputError(f"no such baseline file: {path}; write one with edgeml bench ... --json FILE --save-samples") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not an edgeml bench JSON file ({exc})") from exc
    results = document.get("results", [])
    name = Path(artifact).name
    matches = [r for r in results if Path(r.get("artifact", "")).name == name and r.get("batch") == batch
               and r.get("threads") == threads]
    if not matches:
        have = ", ".join(r.get("name", "?") for r in results) or "nothing"
        raise InputError(f"the baseline has no run of {name} at batch {batch}, threads {threads or 'default'} "
                         f"(it has: {have}); bench the same artifact and settings")
    entry = matches[0]
    if not entry.get("samples_ns"):
        raise InputError("the baseline has no raw samples, which the significance test needs; "
                         "write it with --json FILE --save-samples")
    entry.setdefault("environment", document.get("environment", {}))
    return entry


def judge_baseline(samples, base: dict, max_regression: float) -> dict:
    current = np.asarray(samples, dtype=np.float64)
    previous = np.asarray(base["samples_ns"], dtype=np.float64)
    slowdown = float(np.median(current) / np.median(previous) - 1)
    p_value = mann_whitney_greater(current, previous)
    significant = p_value < ALPHA
    regressed = slowdown > max_regression and significant
    word = "slower" if slowdown >= 0 else "faster"
    verdict = "REGRESSION" if regressed else ("within tolerance" if slowdown > 0 else "no regression")
    summary = (f"vs baseline: p50 {abs(slowdown):.1%} {word} ({'significant' if significant else 'not significant'}, "
               f"p={p_value:.2g}; limit {max_regression:.0%}): {verdict}")
    return {"kind": "baseline", "baseline_p50_ms": float(np.median(previous)) / 1e6, "slowdown": slowdown,
            "p_value": p_value, "significant": significant, "max_regression": max_regression,
            "regressed": regressed, "summary": summary}


def run_against(call: Callable[[], object], artifact, other_path, per_call_ns: float, batch: int, data, seed: int,
                method, needed: int, device: str, threads, load_options: dict, say) -> tuple[list[int], dict]:
    """Time this artifact and ``other_path`` in alternating blocks; returns this one's samples and the ratio."""
    from ..runtimes import load
    from .runner import cycle_calls, bench_inputs, warm_up
    from .stats import summarize

    with load(other_path, device=device, threads=threads, **load_options) as other:
        other_call = cycle_calls(other.run, bench_inputs(other, batch, data, seed))
        warm_up(other_call, method)
        block = int(min(5000, max(5, BLOCK_MS * 1e6 / max(per_call_ns, 1))))
        say(f"measuring {Path(artifact).name} against {Path(other_path).name}, interleaved in blocks of {block} runs")
        mine, theirs, ratios = [], [], []
        clock = time.perf_counter_ns
        start = clock()
        while True:
            a, b = timed_block(call, block), timed_block(other_call, block)
            mine += a
            theirs += b
            ratios.append(float(np.median(a) / np.median(b)))
            elapsed = clock() - start
            if (len(mine) >= needed and len(ratios) >= MIN_BLOCKS and elapsed >= 2 * method.min_seconds * 1e9) \
                    or elapsed >= method.max_seconds * 1e9:
                break
    ratio, low, high = ratio_interval(ratios, 0.95)  # the median of block ratios, inside its own interval
    summary = (f"vs {Path(other_path).name}: p50 ratio {ratio:.3f} (95% CI {low:.3f}-{high:.3f}, {len(ratios)} blocks; "
               f"< 1 means {Path(artifact).name} is faster)")
    return mine, {"kind": "against", "other": str(other_path), "ratio": ratio, "ci_low": low, "ci_high": high,
                  "confidence": 0.95, "blocks": len(ratios), "other_stats": summarize(theirs, batch),
                  "summary": summary}


def timed_block(call: Callable[[], object], count: int) -> list[int]:
    """``count`` timed calls, the first tenth (at least one) dropped as settling time."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(count):
        t0 = clock()
        call()
        samples.append(clock() - t0)
    return samples[max(1, int(SETTLE * count)):]
