"""``edgeml.bench``: load an artifact, time its first inference, warm it up, then time each call.

Method (after trtexec and MLPerf LoadGen): load time and first inference are reported apart; warm-up
lasts until both a time and a count are reached; measurement runs until both a minimum count and a
minimum duration are reached, longer when the gated percentile needs more samples for its
conservative estimate, never past a cap. Each call is timed alone with ``time.perf_counter_ns``
(CUDA runtimes synchronize inside ``run``). Inputs cycle through several batches so caches do not flatter.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data import random_feeds, read_feeds
from ..errors import InputError
from .stats import conservative_percentile, min_samples, percentile_key, summarize

#: Distinct input batches cycled through during a run.
INPUT_BATCHES = 8
#: Coefficient of variation above which a run is flagged as noisy.
NOISY_COV = 0.05


@dataclass
class Method:
    """How long to warm up and to measure; the defaults follow trtexec."""

    warmup_ms: float = 200.0
    warmup_runs: int = 10
    min_runs: int = 100
    min_seconds: float = 3.0
    max_seconds: float = 60.0
    max_runs: int = 2_000_000

    def validate(self) -> "Method":
        if self.min_runs < 1 or self.warmup_runs < 0 or self.warmup_ms < 0 or self.min_seconds < 0:
            raise InputError("--runs must be at least 1; --warmup, --warmup-ms and --min-seconds at least 0")
        if self.max_seconds < self.min_seconds or self.max_runs < self.min_runs:
            raise InputError("the cap (--max-seconds) must not be below the minimum (--min-seconds)")
        return self


@dataclass
class BenchResult:
    artifact: str
    backend: str
    device: str
    batch: int
    threads: int | None
    load_ms: float
    first_ms: float
    warmup_runs: int
    warmup_ms: float
    stats: dict
    percentile: float
    budget_ms: float | None
    conservative: dict
    environment: dict
    notes: list[str] = field(default_factory=list)
    comparison: dict | None = None
    samples_ns: list[int] = field(repr=False, default_factory=list)

    @property
    def name(self) -> str:
        return f"{Path(self.artifact).name} batch {self.batch} threads {self.threads or 'default'}"

    @property
    def gated_ms(self) -> float:
        """What the budget gate judges: the conservative estimate of the chosen percentile."""
        return self.conservative["value_ms"]

    @property
    def within_budget(self) -> bool | None:
        return None if self.budget_ms is None else self.gated_ms <= self.budget_ms

    @property
    def regressed(self) -> bool | None:
        if not self.comparison or self.comparison.get("kind") != "baseline":
            return None
        return self.comparison["regressed"]

    @property
    def passed(self) -> bool | None:
        """False when a gate failed (budget or regression), True when all set gates passed, None when none was set."""
        gates = [g for g in (self.within_budget, None if self.regressed is None else not self.regressed) if g is not None]
        return all(gates) if gates else None

    def verdict(self) -> str:
        key = percentile_key(self.percentile)
        c = self.conservative
        how = (f"conservative {key} {self.gated_ms:.3f} ms (99% upper bound, {c['discarded']} slowest dropped; "
               f"measured {key} {self.stats[f'{key}_ms']:.3f} ms)") if c["enough"] else \
              (f"max {self.gated_ms:.3f} ms (too few samples for a conservative {key}: {self.stats['count']} < {c['min_samples']})")
        parts = [how if self.budget_ms is None else
                 f"{how} {'within' if self.within_budget else 'OVER'} budget {self.budget_ms:g} ms"]
        if self.comparison:
            parts.append(self.comparison["summary"])
        return "; ".join(parts)

    def to_dict(self, samples: bool = False) -> dict:
        data = asdict(self)
        if not samples:
            data.pop("samples_ns")
        data.update(name=self.name, gated_ms=self.gated_ms, within_budget=self.within_budget,
                    regressed=self.regressed, passed=self.passed)
        return data


def bench(artifact: str | os.PathLike, *, budget_ms: float | None = None, percentile: float = 99, batch: int = 1,
          threads: int | None = None, device: str = "cpu", data=None, seed: int = 0, method: Method | None = None,
          baseline: str | os.PathLike | dict | None = None, max_regression: float = 0.10,
          against: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None,
          **load_options) -> BenchResult:
    """Measure ``artifact``'s latency per call of its Runtime (what an app sees) and judge the gates.

    ``baseline``: a JSON written by ``--json --save-samples`` (or its dict); the run regresses when it is
    slower by more than ``max_regression`` (0.10 = 10%) *and* significantly so (one-sided Mann-Whitney U,
    p < 0.01). ``against``: another artifact, run interleaved in the same process, reported as a ratio.
    """
    from ..environment import differences, fingerprint
    from ..runtimes import load
    from .compare import judge_baseline, load_baseline, run_against

    method = (method or Method()).validate()
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if budget_ms is not None and budget_ms <= 0:
        raise InputError(f"--budget-ms must be positive, got {budget_ms}")
    if not 0 < percentile <= 100:
        raise InputError(f"--percentile must be in (0, 100], got {percentile}")
    if max_regression < 0:
        raise InputError(f"--max-regression must be >= 0, got {max_regression}")
    if baseline is not None and against is not None:
        raise InputError("give --baseline or --against, not both: run them as two benches")
    say = progress or (lambda message: None)
    base = load_baseline(baseline, artifact, batch, threads) if baseline is not None else None

    start = time.perf_counter_ns()
    runtime = load(artifact, device=device, threads=threads, **load_options)
    load_ns = time.perf_counter_ns() - start
    notes: list[str] = []
    with runtime:
        batches = bench_inputs(runtime, batch, data, seed)
        start = time.perf_counter_ns()
        runtime.run(batches[0])
        first_ns = time.perf_counter_ns() - start
        say(f"loaded in {load_ns / 1e6:.1f} ms, first inference {first_ns / 1e6:.2f} ms")
        call = cycle_calls(runtime.run, batches)
        warm_runs, warm_ns = warm_up(call, method)
        needed = max(method.min_runs, min_samples(percentile) or 0)
        if against is not None:
            samples, comparison = run_against(call, artifact, against, warm_ns / max(warm_runs, 1), batch, data, seed,
                                              method, needed, device, threads, load_options, say)
        else:
            say(f"warmed up ({warm_runs} runs, {warm_ns / 1e6:.0f} ms); measuring for >= {method.min_seconds:g} s "
                f"and >= {needed} runs")
            samples, extended = time_calls(call, method, needed)
            comparison = None
            if extended:
                notes.append(f"ran past the minimum to reach {needed} samples, the fewest for a conservative "
                             f"{percentile_key(percentile)}")
    stats = summarize(samples, batch, extra_percentiles=(percentile,))
    ordered = np.sort(np.asarray(samples))
    conservative = conservative_percentile(ordered, percentile)
    conservative["value_ms"] = float(conservative.pop("value")) / 1e6
    if not conservative["enough"]:
        notes.append(f"only {len(samples)} samples within the cap ({method.max_seconds:g} s): too few for a conservative "
                     f"{percentile_key(percentile)} (needs {conservative['min_samples']}); the gate uses the max")
    if stats["cov"] > NOISY_COV:
        notes.append(f"noisy run: coefficient of variation {stats['cov']:.1%} > {NOISY_COV:.0%} (other load on this "
                     "machine? try --threads, or a longer --min-seconds)")
    environment = fingerprint(runtime.backend, device, threads)
    if base is not None:
        comparison = judge_baseline(samples, base, max_regression)
        differ = differences(environment, base.get("environment", {}))
        if differ:
            notes.append(f"the baseline was measured on another machine or setup ({', '.join(differ)} differ): "
                         "compare with care")
    return BenchResult(
        artifact=str(Path(artifact)), backend=runtime.backend, device=device, batch=batch, threads=threads,
        load_ms=load_ns / 1e6, first_ms=first_ns / 1e6, warmup_runs=warm_runs, warmup_ms=warm_ns / 1e6,
        stats=stats, percentile=percentile, budget_ms=budget_ms, conservative=conservative,
        environment=environment, notes=notes, comparison=comparison, samples_ns=list(samples),
    )


def bench_sweep(artifact: str | os.PathLike, *, batches: Sequence[int] = (1,), threads: Sequence[int | None] = (None,),
                **options) -> list[BenchResult]:
    """``bench`` for every batch size x thread count, in that order: one table, one report."""
    return [bench(artifact, batch=b, threads=t, **options) for t in threads for b in batches]


def cycle_calls(run: Callable, batches: list[dict]) -> Callable[[], object]:
    following = itertools.cycle(batches).__next__
    return lambda: run(following())


def warm_up(call: Callable[[], object], method: Method) -> tuple[int, int]:
    """Run until both the warm-up time and count are reached; returns (runs, ns)."""
    clock = time.perf_counter_ns
    start = clock()
    until = start + int(method.warmup_ms * 1e6)
    runs = 0
    while runs < method.warmup_runs or clock() < until:
        call()
        runs += 1
    return runs, clock() - start


def time_calls(call: Callable[[], object], method: Method, needed: int) -> tuple[list[int], bool]:
    """Time each call until >= ``needed`` runs and >= min_seconds, or the cap; returns (samples, extended)."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    start = clock()
    min_done = start + int(method.min_seconds * 1e9)
    cap = start + int(method.max_seconds * 1e9)
    min_runs, max_runs = method.min_runs, method.max_runs
    extended = False
    n = 0
    while True:
        t0 = clock()
        call()
        t1 = clock()
        append(t1 - t0)
        n += 1
        if n >= min_runs and t1 >= min_done:
            if n >= needed:
                break
            extended = True
        if n >= max_runs or t1 >= cap:
            break
    return samples, extended


def bench_inputs(runtime, batch: int, data, seed: int) -> list[dict]:
    """Several distinct batches: consecutive rows of ``data``, else random from the specs (seeds seed, seed+1...)."""
    for spec in runtime.inputs:
        first = spec.shape[0] if spec.shape else None
        if isinstance(first, int) and first != batch:
            raise InputError(
                f"input {spec.name!r} has a fixed batch of {first}, so --batch {batch} cannot run; "
                f"use --batch {first}, or convert with --dynamic-batch"
            )
    if data is None:
        return [random_feeds(runtime.inputs, batch=batch, seed=seed + i) for i in range(INPUT_BATCHES)]
    feeds = read_feeds(data, runtime.inputs, limit=INPUT_BATCHES * batch)
    rows = min(len(v) for v in feeds.values())
    if rows < batch:
        raise InputError(f"{data} has {rows} rows, fewer than --batch {batch}")
    count = min(INPUT_BATCHES, rows // batch)
    return [{k: v[i * batch:(i + 1) * batch] for k, v in feeds.items()} for i in range(count)]
