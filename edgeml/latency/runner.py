"""``edgeml.bench``: load an artifact, time its first inference, then time each call with perf_counter_ns.

The gate compares the chosen percentile with the budget; the CLI turns a failed gate into exit code 1.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..data import random_feeds, read_feeds
from ..errors import InputError
from .stats import percentile_key, summarize


@dataclass
class BenchResult:
    artifact: str
    backend: str
    device: str
    batch: int
    threads: int | None
    warmup: int
    runs: int
    load_ms: float
    first_ms: float
    stats: dict
    percentile: float
    budget_ms: float | None
    samples_ns: list[int] = field(repr=False, default_factory=list)

    @property
    def gated_ms(self) -> float:
        """The latency the gate judges: the chosen percentile."""
        return self.stats[f"{percentile_key(self.percentile)}_ms"]

    @property
    def passed(self) -> bool | None:
        """True within budget, False over it, None when no budget was set."""
        return None if self.budget_ms is None else self.gated_ms <= self.budget_ms

    def verdict(self) -> str:
        key = percentile_key(self.percentile)
        if self.budget_ms is None:
            return f"{key} {self.gated_ms:.3f} ms (no budget set)"
        word = "within" if self.passed else "OVER"
        return f"{key} {self.gated_ms:.3f} ms {word} budget {self.budget_ms:g} ms"

    def to_dict(self, samples: bool = False) -> dict:
        data = asdict(self)
        if not samples:
            data.pop("samples_ns")
        data.update(gated_ms=self.gated_ms, passed=self.passed)
        return data

    def save_json(self, path: str | os.PathLike, samples: bool = False) -> None:
        """Write the result (statistics, verdict; raw samples on request) as JSON, atomically."""
        import json

        from ..files import write_bytes_atomic

        write_bytes_atomic(path, (json.dumps(self.to_dict(samples), indent=2) + "\n").encode())


def bench(artifact: str | os.PathLike, *, budget_ms: float | None = None, percentile: float = 99, warmup: int = 10,
          runs: int = 100, batch: int = 1, threads: int | None = None, device: str = "cpu", data=None,
          seed: int = 0, progress: Callable[[str], None] | None = None, **load_options) -> BenchResult:
    """Measure ``artifact``'s latency per call of its Runtime (what an app sees)."""
    from ..runtimes import load

    if runs < 1 or warmup < 0 or batch < 1:
        raise InputError("--runs and --batch must be at least 1 and --warmup at least 0")
    if budget_ms is not None and budget_ms <= 0:
        raise InputError(f"--budget-ms must be positive, got {budget_ms}")
    if not 0 < percentile <= 100:
        raise InputError(f"--percentile must be in (0, 100], got {percentile}")
    say = progress or (lambda message: None)
    start = time.perf_counter_ns()
    runtime = load(artifact, device=device, threads=threads, **load_options)
    load_ns = time.perf_counter_ns() - start
    with runtime:
        feeds = bench_inputs(runtime, batch, data, seed)
        run = runtime.run
        start = time.perf_counter_ns()
        run(feeds)
        first_ns = time.perf_counter_ns() - start
        say(f"loaded in {load_ns / 1e6:.1f} ms, first inference {first_ns / 1e6:.2f} ms; warming up ({warmup} runs)")
        for _ in range(warmup):
            run(feeds)
        say(f"measuring {runs} runs")
        samples = []
        clock = time.perf_counter_ns
        for _ in range(runs):
            t0 = clock()
            run(feeds)
            samples.append(clock() - t0)
    return BenchResult(
        artifact=str(Path(artifact)), backend=runtime.backend, device=device, batch=batch, threads=threads,
        warmup=warmup, runs=runs, load_ms=load_ns / 1e6, first_ms=first_ns / 1e6,
        stats=summarize(samples, batch, extra_percentiles=(percentile,)), percentile=percentile,
        budget_ms=budget_ms, samples_ns=samples,
    )


def bench_inputs(runtime, batch: int, data, seed: int) -> dict:
    """One batch of inputs: the first ``batch`` rows of ``data``, else random from the specs."""
    for spec in runtime.inputs:
        first = spec.shape[0] if spec.shape else None
        if isinstance(first, int) and first != batch:
            raise InputError(
                f"input {spec.name!r} has a fixed batch of {first}, so --batch {batch} cannot run; "
                f"use --batch {first}, or convert with --dynamic-batch"
            )
    if data is None:
        return random_feeds(runtime.inputs, batch=batch, seed=seed)
    feeds = read_feeds(data, runtime.inputs)
    rows = min(len(v) for v in feeds.values())
    if rows < batch:
        raise InputError(f"{data} has {rows} rows, fewer than --batch {batch}")
    return {k: v[:batch] for k, v in feeds.items()}
