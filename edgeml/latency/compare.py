"""Comparisons: against a stored baseline (regression gate) and against another artifact (interleaved A/B).

A regression fails the gate only when it is both larger than the threshold and significant, so that
the noise of a shared CI runner does not flap it (the rule asv uses); it compares own times (wall time
less time descheduled) when both runs recorded CPU times. An A/B run interleaves the two
artifacts in short blocks within one process, so that drift hits both alike.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, first_line
from ..readable import regular_file
from .stats import mann_whitney_greater, own_times, ratio_interval, summarize
from .timing import timed_calls, warm_up

#: One-sided significance level of the regression test.
ALPHA = 0.01
#: An A/B block lasts about this long and its first tenth is not kept: worker threads of the side that ran
#: before keep spinning for a while, and would otherwise be billed to this one.
BLOCK_MS = 300.0
SETTLE = 0.1
MIN_BLOCKS = 10


def read_baseline(path) -> object:
    """The parsed JSON of a baseline file (a regular file: a FIFO or a device would never end)."""
    hint = "write one with edgeml bench ... --json FILE --save-samples"
    path = regular_file(path, "baseline file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the baseline {path} ({exc.strerror})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nesting too deep
        raise InputError(f"{path} is not an edgeml bench JSON file ({first_line(exc)}); {hint}") from exc


def load_baseline(baseline, artifact, batch: int, threads, where: str | None = None) -> dict:
    """The baseline entry for this artifact, batch and threads: its raw samples (checked: positive, finite),
    its CPU times when it has them, and its machine's fingerprint. ``baseline`` is a file or its parsed
    document (``where`` names it in errors)."""
    path = isinstance(baseline, (str, os.PathLike))
    document = read_baseline(baseline) if path else baseline
    where = str(baseline) if path else (where or "the baseline")
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise InputError(f"{where} is not an edgeml bench JSON file (it needs a list of results); "
                         "write one with edgeml bench ... --json FILE --save-samples")
    name = Path(artifact).name
    matches = [r for r in results if isinstance(r.get("artifact"), str) and Path(r["artifact"]).name == name
               and r.get("batch") == batch and r.get("threads") == threads]
    if not matches:
        have = ", ".join(str(r.get("name", "?")) for r in results) or "nothing"
        raise InputError(f"the baseline has no run of {name} at batch {batch}, threads {threads or 'default'} "
                         f"(it has: {have}); bench the same artifact and settings")
    entry = matches[0]
    if not entry.get("samples_ns"):
        raise InputError("the baseline has no raw samples, which the significance test needs; "
                         "write it with --json FILE --save-samples")
    samples = _times(entry["samples_ns"], where, "samples_ns", positive=True)
    cpu = entry.get("cpu_ns") or None
    if cpu is not None:
        cpu = _times(cpu, where, "cpu_ns", positive=False)
        if len(cpu) != len(samples):
            raise InputError(f"{where}: cpu_ns has {len(cpu)} values for {len(samples)} samples_ns; "
                             "write the baseline again with --json FILE --save-samples")
    environment = entry.get("environment", document.get("environment", {}))
    if not isinstance(environment, dict):
        raise InputError(f"{where}: its environment is not an object; write the baseline again")
    return {"samples_ns": samples, "cpu_ns": cpu, "environment": environment,
            "inputs": _inputs(entry.get("inputs"))}


def _inputs(value) -> dict | None:
    """A baseline's record of its inputs when it is well formed (older baselines have none)."""
    tensors = value.get("tensors") if isinstance(value, dict) else None
    ok = isinstance(tensors, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("dtype"), str)
        and isinstance(t.get("shape"), list) and all(isinstance(d, int) for d in t["shape"]) for t in tensors)
    return {"origin": str(value.get("origin", "origin unknown"))[:200], "tensors": tensors} if ok else None


def _times(values, where: str, key: str, positive: bool) -> np.ndarray:
    """A list of nanosecond times as int64, or a clear error naming what is wrong with it."""
    ok = isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    array = np.asarray(values, dtype=np.float64) if ok else None
    if array is None or not np.isfinite(array).all() or (array <= 0 if positive else array < 0).any() \
            or (array >= 2**62).any():
        need = "positive" if positive else "non-negative"
        raise InputError(f"{where}: {key} must be a list of {need} times in nanoseconds; write the baseline again "
                         "with --json FILE --save-samples")
    return array.astype(np.int64)


def judge_baseline(wall, cpu, base: dict, max_regression: float, clock: str) -> dict:
    """Slower by more than ``max_regression`` and significantly so? Own times are compared when both runs
    have them and the gate judges own time, else wall times."""
    own = clock == "own" and base["cpu_ns"] is not None
    current = np.asarray(own_times(wall, cpu) if own else wall, dtype=np.float64)
    previous = np.asarray(own_times(base["samples_ns"], base["cpu_ns"]) if own else base["samples_ns"],
                          dtype=np.float64)
    slowdown = float(np.median(current) / np.median(previous) - 1)
    p_value = mann_whitney_greater(current, previous)
    significant = p_value < ALPHA
    regressed = slowdown > max_regression and significant
    word = "slower" if slowdown >= 0 else "faster"
    verdict = "REGRESSION" if regressed else ("within tolerance" if slowdown > 0 else "no regression")
    summary = (f"vs baseline: p50 of {'own' if own else 'wall'} time {abs(slowdown):.1%} {word} "
               f"({'significant' if significant else 'not significant'}, p={p_value:.2g}; limit {max_regression:.0%}): "
               f"{verdict}")
    return {"kind": "baseline", "clock": "own" if own else "wall", "baseline_p50_ms": float(np.median(previous)) / 1e6,
            "slowdown": slowdown, "p_value": p_value, "significant": significant, "max_regression": max_regression,
            "regressed": regressed, "summary": summary}


def run_against(call: Callable[[], object], other_call: Callable[[], object], artifact, other_path, per_call_ns: float,
                method, needed: int, batch: int, say) -> tuple[list[int], list[int], dict]:
    """Time this artifact and the other in alternating blocks; returns this one's wall and CPU times, and the
    ratio of the two."""
    warm_up(other_call, method)
    block = int(min(5000, max(5, BLOCK_MS * 1e6 / max(per_call_ns, 1))))
    say(f"measuring {Path(artifact).name} against {Path(other_path).name}, interleaved in blocks of {block} runs")
    mine, mine_cpu, theirs, ratios = [], [], [], []
    clock = time.perf_counter_ns
    start = clock()
    while True:
        a, a_cpu = settled(*timed_calls(call, block))
        b, _ = settled(*timed_calls(other_call, block))
        mine += a
        mine_cpu += a_cpu
        theirs += b
        ratios.append(float(np.median(a) / np.median(b)))
        elapsed = clock() - start
        if (len(mine) >= needed and len(ratios) >= MIN_BLOCKS and elapsed >= 2 * method.min_seconds * 1e9) \
                or elapsed >= method.max_seconds * 1e9:
            break
    ratio, low, high = ratio_interval(ratios, 0.95)  # the median of block ratios, inside its own interval
    summary = (f"vs {Path(other_path).name}: p50 ratio {ratio:.3f} (95% CI {low:.3f}-{high:.3f}, {len(ratios)} blocks; "
               f"< 1 means {Path(artifact).name} is faster)")
    return mine, mine_cpu, {"kind": "against", "other": str(other_path), "ratio": ratio, "ci_low": low,
                            "ci_high": high, "confidence": 0.95, "blocks": len(ratios),
                            "other_stats": summarize(theirs, batch), "summary": summary}


def settled(wall: list[int], cpu: list[int]) -> tuple[list[int], list[int]]:
    """A block's calls without its first tenth (at least one), the settling time."""
    keep = max(1, int(SETTLE * len(wall)))
    return wall[keep:], cpu[keep:]


def timed_block(call: Callable[[], object], count: int) -> list[int]:
    """``count`` timed calls, the first tenth (at least one) dropped as settling time: wall ns."""
    return settled(*timed_calls(call, count))[0]
