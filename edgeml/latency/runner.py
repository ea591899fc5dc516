"""``edgeml.bench``: load an artifact, time its first inference, warm it up, then time each call.

Method (after trtexec and MLPerf LoadGen): load time and first inference are reported apart; warm-up
lasts until both a time and a count are reached; measurement runs until both a minimum count and a
minimum duration are reached, longer when the gate needs more samples (5 blocks, each with a bound that
is not its slowest call), never past a cap. Each call is timed alone on the wall clock
(``perf_counter_ns``; CUDA runtimes synchronize inside ``run``) and by the time the scheduler kept the
calling thread waiting for a CPU (Linux's run-queue delay; the thread CPU clock elsewhere), so that time
given to other work is reported apart from the model's own time (``stats.own_times``). Inputs cycle through several batches so caches do not flatter. Every
option, and every point of a sweep, is checked before anything is measured.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..data import (OTHER_DIM, check_sizes, concrete_specs, describe_feeds, format_inputs, generated_origin, parse_shapes,
                    generated_failure, random_feeds, read_feeds, sample_count, select_rows, unbatched)
from ..datafiles import is_text_file
from ..errors import InputError, first_line
from ..spec import check_input_bytes, fixed_batch, format_shape, max_input_bytes
from .compare import judge_baseline, load_baseline, read_baseline, run_against
from .stats import (BLOCK_CONFIDENCE, BLOCKS, CONFIDENCE, block_gate, block_samples, descheduled, gate_samples,
                    own_times, percentile_key, summarize)
from .timing import time_calls, warm_up

#: Distinct input batches cycled through during a run.
INPUT_BATCHES = 8
#: A run is flagged as noisy when the interquartile range of its calls exceeds this share of their median,
#: or when its blocks' bounds differ by more than ``BLOCKS_DISAGREE``, or when more than ``DESCHEDULED_SHARE``
#: of its calls were descheduled.
NOISY_SPREAD = 0.10
BLOCKS_DISAGREE = 0.25
DESCHEDULED_SHARE = 0.05
#: Bounds that keep a run finite and its samples in memory.
LIMIT_SECONDS = 3600
LIMIT_RUNS = 10_000_000
CLOCKS = ("own", "wall")


def check_number(value, flag: str, low: float, high: float, *, whole: bool = False, above: bool = False) -> None:
    """Refuse what is not a number (NaN, infinities, booleans, text) or lies outside [low, high] ((low, high]
    with ``above``), naming the option and the range."""
    kind = numbers.Integral if whole else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) \
        and (isinstance(value, numbers.Integral) or math.isfinite(value)) \
        and (value > low if above else value >= low) and value <= high
    if not ok:
        bounds = f"above {low:,g}" if above else f"at least {low:,g}"
        if math.isfinite(high):
            bounds += f" and at most {high:,g}"
        raise InputError(f"{flag} must be {'a whole number' if whole else 'a finite number'} {bounds}, got {value!r}")


@dataclass
class Method:
    """How long to warm up and to measure, and which clock the gate judges; the defaults follow trtexec.

    ``clock``: "own" (wall time less the time the calling thread was descheduled) or "wall".
    """

    warmup_ms: float = 200.0
    warmup_runs: int = 10
    min_runs: int = 100
    min_seconds: float = 3.0
    max_seconds: float = 60.0
    max_runs: int = 2_000_000
    clock: str = "own"

    def validate(self) -> "Method":
        check_number(self.max_runs, "max_runs", 1, LIMIT_RUNS, whole=True)
        check_number(self.warmup_ms, "--warmup-ms", 0, LIMIT_SECONDS * 1e3)
        check_number(self.warmup_runs, "--warmup", 0, self.max_runs, whole=True)
        check_number(self.min_runs, "--runs", 1, self.max_runs, whole=True)
        check_number(self.max_seconds, "--max-seconds", 0, LIMIT_SECONDS, above=True)
        check_number(self.min_seconds, "--min-seconds", 0, LIMIT_SECONDS)
        if self.min_seconds > self.max_seconds:
            raise InputError(f"--min-seconds {self.min_seconds:g} is above the cap, --max-seconds {self.max_seconds:g}; "
                             "raise the cap or lower the minimum")
        if self.clock not in CLOCKS:
            raise InputError(f"--clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
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
    percentile: float
    budget_ms: float | None
    clock: str
    stats: dict
    wall_stats: dict
    gate: dict
    descheduled: dict
    environment: dict
    notes: list[str] = field(default_factory=list)
    comparison: dict | None = None
    inputs: dict = field(default_factory=dict)  # the shapes timed and where the inputs came from (describe_feeds)
    providers: list[str] = field(default_factory=list)  # the backend really used (Runtime.providers)
    device_copies: dict = field(default_factory=dict)  # a GPU run's untimed copies (Runtime.bench_call)
    runtime_options: dict = field(default_factory=dict)  # the backend's own options (edgeml.load's ``options``)
    samples_ns: list[int] = field(repr=False, default_factory=list)
    cpu_ns: list[int] = field(repr=False, default_factory=list)

    @property
    def name(self) -> str:
        return f"{Path(self.artifact).name} batch {self.batch} threads {self.threads or 'default'}"

    @property
    def gated_ms(self) -> float:
        """What the budget gate judges: the lowest of the blocks' upper bounds on the percentile (``GATE_RULE``)."""
        return self.gate["value_ms"]

    @property
    def gated_samples_ns(self) -> np.ndarray:
        """The samples the gate judged: own times, or wall times (``clock``)."""
        return own_times(self.samples_ns, self.cpu_ns) if self.clock == "own" else np.asarray(self.samples_ns)

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
        """One line: the gated value against the budget, what it is, and the facts behind it."""
        key, g, s = percentile_key(self.percentile), self.gate, self.stats
        head = f"conservative {key} {self.gated_ms:.3f} ms"
        if self.budget_ms is not None:
            head += f" {'within' if self.within_budget else 'OVER'} budget {self.budget_ms:g} ms"
        of = "own time" if self.clock == "own" else "wall time"
        if g["blocks"] == 1 and self.percentile >= 100:
            how = f"the slowest call's {of}: p100 has nothing to bound"
        elif g.get("pooled") and not g["pooled_enough"]:
            how = (f"the slowest of all {s['count']} calls' {of}: too few for a bound on {key}, which needs "
                   f"{g['min_samples']} calls (or {g['blocks']} blocks of {g['block_samples']} for the block rule)")
        elif g.get("pooled"):
            rank = "slowest" if g["discarded"] == 0 else f"{_ordinal(g['discarded'] + 1)} slowest"
            how = (f"one {CONFIDENCE:.0%} bound on the {key} of all {s['count']} calls' {of}, their {rank}: too few "
                   f"calls for {g['blocks']} block bounds, which need {g['block_samples']} each")
        else:
            calls = g["block_calls"][g["chosen_block"]]
            rank = "slowest" if g["discarded"] == 0 else f"{_ordinal(g['discarded'] + 1)} slowest"
            how = (f"lowest of {g['blocks']} blocks' {BLOCK_CONFIDENCE:.1%} bounds on the {key} of {of}, each its "
                   f"block's {rank} of {calls} calls: a {CONFIDENCE:.0%} upper bound on the run's quietest stretch")
        low, high = min(g["block_values_ms"]), max(g["block_values_ms"])
        blocks = "block maxima" if g.get("pooled") else "block bounds"
        facts = f"{blocks} {low:.3f}-{high:.3f} ms; all calls: {key} {s[f'{key}_ms']:.3f} ms {self.clock}"
        if self.clock == "own":
            facts += f", {self.wall_stats[f'{key}_ms']:.3f} ms wall, {self.descheduled['share']:.1%} descheduled"
        parts = [f"{head} ({how}; {facts})"]
        if self.comparison:
            parts.append(self.comparison["summary"])
        return "; ".join(parts)

    def to_dict(self, samples: bool = False) -> dict:
        data = asdict(self)
        if not samples:
            data.pop("samples_ns")
            data.pop("cpu_ns")
        data.update(name=self.name, gated_ms=self.gated_ms, within_budget=self.within_budget,
                    regressed=self.regressed, passed=self.passed)
        return data


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def analyse(wall_ns, cpu_ns, batch: int, percentile: float, clock: str) -> dict:
    """Statistics of the gated samples (own or wall time) and of wall time, the gate, and the descheduled
    calls (counted whichever clock the gate judges)."""
    wall = np.asarray(wall_ns, dtype=np.int64)
    own = own_times(wall, cpu_ns)
    gated = own if clock == "own" else wall
    gate = block_gate(gated, percentile)
    gate["value_ms"] = gate.pop("value") / 1e6
    gate["block_values_ms"] = [v / 1e6 for v in gate.pop("block_values")]
    lost = descheduled(wall, own)
    return {"clock": clock, "stats": summarize(gated, batch, (percentile,)),
            "wall_stats": summarize(wall, batch, (percentile,)), "gate": gate,
            "descheduled": {"calls": int(lost.sum()), "share": float(lost.mean()),
                            "lost_ms": float((wall - own).sum()) / 1e6}}


def noise_notes(analysis: dict, threads: int | None) -> list[str]:
    """Why a run's numbers may be the machine's rather than the model's, each with what to do."""
    s, g, d = analysis["stats"], analysis["gate"], analysis["descheduled"]
    notes = []
    if s["spread"] > NOISY_SPREAD:
        notes.append(f"noisy run: the middle half of the calls spans {s['spread']:.0%} of their median (IQR/p50 > "
                     f"{NOISY_SPREAD:.0%}): other load on this machine? a longer --min-seconds gives each block more calls")
    low, high = min(g["block_values_ms"]), max(g["block_values_ms"])
    if low > 0 and high / low - 1 > BLOCKS_DISAGREE:
        notes.append(f"the load changed during the run: the {g['blocks']} blocks' bounds range {low:.3f}-{high:.3f} ms; "
                     + ("the gate took the lowest, the block the machine disturbed least" if not g.get("pooled") else
                        "too few calls for block bounds: the gate pooled them all"))
    if d["share"] > DESCHEDULED_SHARE:
        billed = "not billed to the model" if analysis["clock"] == "own" else "billed to the model (--clock wall)"
        hint = "" if threads == 1 else (
            "; a worker thread's descheduling still counts as the model's time: on a shared runner pin --threads 1")
        notes.append(f"descheduled in {d['share']:.0%} of calls: {d['lost_ms']:.1f} ms of other work on this machine, "
                     f"{billed}{hint}")
    return notes


#: The options ``check_options`` judges, besides the batch size.
_CHECKED = ("budget_ms", "percentile", "seed", "method", "baseline", "max_regression", "against", "data", "text",
            "shapes")


def check_options(*, budget_ms=None, percentile=90, batch=1, seed=0, method=None, baseline=None, max_regression=0.10,
                  against=None, data=None, text=None, shapes=None) -> Method:
    """Every value bench takes, checked before anything is loaded or measured; returns the Method."""
    method = (method or Method()).validate()
    check_number(batch, "--batch", 1, math.inf, whole=True)
    if budget_ms is not None:
        check_number(budget_ms, "--budget-ms", 0, math.inf, above=True)
    check_number(percentile, "--percentile", 1e-6, 100)
    check_number(seed, "--seed", 0, math.inf, whole=True)
    check_number(max_regression, "--max-regression", 0, math.inf)
    if baseline is not None and against is not None:
        raise InputError("give --baseline or --against, not both: run them as two benches")
    if data is not None and text is not None:
        raise InputError("give --data or --text, not both: --text FILE is sentences, --data FILE arrays")
    parse_shapes(shapes)
    return method


def bench(artifact: str | os.PathLike, *, budget_ms: float | None = None, percentile: float = 90, batch: int = 1,
          threads: int | None = None, device: str = "cpu", data=None, seed: int = 0, method: Method | None = None,
          baseline: str | os.PathLike | dict | None = None, max_regression: float = 0.10,
          against: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None,
          shapes=None, text: str | os.PathLike | None = None, source: Mapping | None = None,
          runtime_options: Mapping | None = None) -> BenchResult:
    """Measure ``artifact``'s latency per call of its Runtime (what an app sees) and judge the gates.

    The budget gate judges the lowest of 5 blocks' upper bounds on ``percentile`` (default p90, MLPerf
    single-stream's) of the calls' own time (``method.clock``). ``baseline``: a JSON written by
    ``--json --save-samples`` (or its dict); the run regresses when it is slower by more than
    ``max_regression`` (0.10 = 10%) *and* significantly so (one-sided Mann-Whitney U, p < 0.01).
    ``against``: another artifact, run interleaved in the same process, reported as a ratio.
    ``shapes``: sizes of symbolic dims ({"sequence": 128}, "sequence=128" or a list of such; not the batch's:
    that is ``batch``) for generated or tokenized inputs. ``text``: a file of sentences, one a line, tokenized
    by the artifact's tokenizer (``data`` may also name a ``.txt``). The result records the shapes timed
    and where the inputs came from (``inputs``). ``source``: how to load a source model, ``runtime_options``:
    the backend's own options (``edgeml.load``'s ``source`` and ``options``). On a GPU the calls keep their
    inputs and outputs on the device (``Runtime.bench_call``); the copies are reported apart.
    """
    from ..environment import differences, fingerprint
    from ..runtimes import load

    method = check_options(budget_ms=budget_ms, percentile=percentile, batch=batch, seed=seed, method=method,
                           baseline=baseline, max_regression=max_regression, against=against, data=data, text=text,
                           shapes=shapes)
    say = progress or (lambda message: None)
    base = load_baseline(baseline, artifact, batch, threads) if baseline is not None else None

    start = time.perf_counter_ns()
    runtime = load(artifact, device=device, threads=threads, source=source, options=runtime_options)
    load_ns = time.perf_counter_ns() - start
    device = runtime.device  # a TensorRT engine runs on the GPU whatever the default said
    clock, notes = gate_clock(method.clock, device)
    with runtime, contextlib.ExitStack() as stack:
        batches, inputs = bench_inputs(runtime, batch, data, seed, shapes=shapes, text=text)
        batch = inputs.pop("batch", batch)  # data run as it is: its rows are the batch
        say(f"inputs: {format_inputs(inputs)}")
        if against is not None:
            other = stack.enter_context(load(against, device=device, threads=threads, source=source,
                                             options=runtime_options))
            other_call = other.bench_call(bench_inputs(other, batch, data, seed, shapes=shapes, text=text)[0])[0]
            differ = input_differences(runtime.inputs, other.inputs)
            if differ:
                notes.append(f"{Path(artifact).name} and {Path(against).name} take different inputs ({differ}): the "
                             "ratio compares different work")
                say(f"warning: {notes[-1]}")
        start = time.perf_counter_ns()
        try:
            runtime.run(batches[0])
        except InputError as exc:
            if data is not None or text is not None:
                raise
            raise generated_failure(runtime.what, runtime.inputs, runtime.meta, first_line(exc.__cause__ or exc)) from exc
        first_ns = time.perf_counter_ns() - start
        say(f"loaded in {load_ns / 1e6:.1f} ms, first inference {first_ns / 1e6:.2f} ms")
        call, copies = runtime.bench_call(batches)
        if copies:
            notes.append(f"inputs and outputs stay on {device} between calls: the copies, not timed, take "
                         f"{copies['host_to_device_ms']:.3f} ms host to device and {copies['device_to_host_ms']:.3f} "
                         "ms back (median of 5)")
        warm_runs, warm_ns = warm_up(call, method)
        per_call_ns = warm_ns / max(warm_runs, 1)
        needed = max(method.min_runs, gate_samples(percentile))
        if against is not None:
            wall, cpu, comparison = run_against(call, other_call, artifact, against, per_call_ns, method, needed, batch,
                                                say)
        else:
            say(f"warmed up ({warm_runs} runs, {warm_ns / 1e6:.0f} ms); measuring for >= {method.min_seconds:g} s "
                f"and >= {needed} runs")
            wall, cpu, extended = time_calls(call, method, needed, per_call_ns)
            comparison = None
            if extended and len(wall) >= needed:
                notes.append(f"ran past the minimum to reach {needed} samples: {BLOCKS} blocks of "
                             f"{block_samples(percentile)}, the fewest for a bound on {percentile_key(percentile)} "
                             "that is not a block's slowest call")
    if not cpu_clock_resolves_calls():  # no accounting: every call's CPU time is its wall time
        cpu = wall
    analysis = analyse(wall, cpu, batch, percentile, clock)
    if len(wall) < needed:
        notes.append(f"only {len(wall)} samples within the cap (--max-seconds {method.max_seconds:g}): "
                     f"{percentile_key(percentile)} needs {needed} for bounds that are not a block's slowest call "
                     f"(see the verdict); a longer --max-seconds, or a lower --percentile, gets them")
    notes += noise_notes(analysis, threads)
    environment = fingerprint(runtime.backend, device, threads, runtime.tools)
    if base is not None:
        comparison = judge_baseline(wall, cpu, base, max_regression, clock)
        differ = differences(environment, base["environment"])
        if differ:
            notes.append(f"the baseline was measured on another machine or setup ({', '.join(differ)} differ): "
                         "compare with care")
        if base.get("inputs") and base["inputs"].get("tensors") != inputs["tensors"]:
            notes.append(f"the baseline timed other inputs ({format_inputs(base['inputs'])}; now "
                         f"{format_inputs(inputs)}): the comparison compares different work")
    return BenchResult(
        artifact=str(Path(artifact)), backend=runtime.backend, device=device, batch=batch, threads=threads,
        load_ms=load_ns / 1e6, first_ms=first_ns / 1e6, warmup_runs=warm_runs, warmup_ms=warm_ns / 1e6,
        percentile=percentile, budget_ms=budget_ms, **analysis, environment=environment, notes=notes,
        comparison=comparison, inputs=inputs, providers=list(runtime.providers), device_copies=copies,
        runtime_options=dict(runtime_options or {}),
        samples_ns=list(wall), cpu_ns=list(cpu),
    )


def bench_sweep(artifact: str | os.PathLike, *, batches: Sequence[int] = (1,), threads: Sequence[int | None] = (None,),
                **options) -> list[BenchResult]:
    """``bench`` for every batch size x thread count, in that order: one table, one report. Every point is
    checked first (options, baseline entries, batch sizes against both artifacts' inputs and the data), so
    that a sweep never fails after measuring part of it."""
    batches, threads = list(batches), list(threads)
    if not batches or not threads:
        raise InputError("--batch and --threads need at least one value each, e.g. --batch 1,8,32")
    check_sweep(artifact, batches, threads, options)
    return [bench(artifact, batch=b, threads=t, **options) for t in threads for b in batches]


def check_sweep(artifact, batches: list, threads: list, options: dict) -> None:
    """What ``bench_sweep`` checks before measuring; a baseline file is read here, once, for every point."""
    from ..runtimes import load
    from ..runtimes.base import check_threads

    for t in threads:
        check_threads(t)
    for b in batches:
        check_options(batch=b, **{k: v for k, v in options.items() if k in _CHECKED})
    baseline = options.get("baseline")
    where = str(baseline) if isinstance(baseline, (str, os.PathLike)) else None
    if where:
        options["baseline"] = read_baseline(baseline)
    if baseline is not None:
        for t in threads:
            for b in batches:
                load_baseline(options["baseline"], artifact, b, t, where=where)
    if len(batches) == 1:  # bench checks its one batch size itself, before measuring
        return
    for path in (artifact, options.get("against")):
        if path is not None:
            with load(path, device=options.get("device", "cpu"), threads=threads[0], source=options.get("source"),
                      options=options.get("runtime_options")) as runtime:
                for b in batches:
                    bench_inputs(runtime, b, options.get("data"), options.get("seed", 0), shapes=options.get("shapes"),
                                 text=options.get("text"))


def input_differences(mine, theirs) -> str:
    """The inputs two artifacts disagree on (names, dtypes, shapes), or '' when they take the same."""
    a, b = [str(s) for s in mine], [str(s) for s in theirs]
    return "" if a == b else f"{', '.join(a)} vs {', '.join(b)}"


def gate_clock(clock: str, device: str) -> tuple[str, list[str]]:
    """The clock the gate can judge here: own time needs the work on this process's CPU threads and a thread
    CPU clock fine enough for single calls; otherwise wall time, said in a note."""
    if clock == "wall":
        return "wall", []
    if device != "cpu":
        return "wall", [f"on {device} the calls wait for the device, not the CPU: the gate judges wall time"]
    if not cpu_clock_resolves_calls():
        return "wall", ["this platform's thread CPU clock is too coarse to account single calls: the gate judges "
                        "wall time, and no call is counted as descheduled"]
    return "own", []


@functools.lru_cache(maxsize=1)
def cpu_clock_resolves_calls() -> bool:
    """Whether the thread CPU clock ticks finely enough to account single calls (ns on Linux and macOS;
    Windows counts in 15.6 ms ticks)."""
    read, clock = time.thread_time_ns, time.perf_counter_ns
    first = now = read()
    deadline = clock() + 5_000_000
    while now == first and clock() < deadline:
        now = read()
    return first < now <= first + 100_000


def bench_inputs(runtime, batch: int, data, seed: int, *, shapes=None, text=None) -> tuple[list[dict], dict]:
    """Several distinct batches, and their description for the reports (``describe_feeds``): consecutive rows
    of ``data``, or sentences of ``text`` (or of a ``.txt`` ``data``) tokenized to one length (``shapes``'
    sequence size, else the longest), else generated from the specs and what the inputs mean
    (``runtime.meta``; seeds seed, seed+1...), symbolic dims sized by ``shapes``."""
    fixed = fixed_batch(runtime.inputs)
    if fixed is not None and fixed != batch:
        name = next(s.name for s in runtime.inputs if s.shape)
        raise InputError(f"input {name!r} has a fixed batch of {fixed}, so --batch {batch} cannot run; "
                         f"use --batch {fixed}, or convert with --dynamic-batch")
    sizes = parse_shapes(shapes)
    check_sizes(runtime.inputs, sizes, runtime.meta if sizes else None, batch_fix="set it with --batch")
    source = text if text is not None else data
    if source is None:  # as many distinct sets as fit the input-size limit together (each set is checked alone)
        meta = runtime.meta
        specs = concrete_specs(runtime.inputs, batch, OTHER_DIM, sizes=sizes, meta=meta)
        one_set = check_input_bytes(specs, what=f"generated inputs at batch {batch}")
        count = max(1, min(INPUT_BATCHES, max_input_bytes() // max(one_set, 1)))
        batches = [random_feeds(runtime.inputs, batch=batch, seed=seed + i, sizes=sizes, meta=meta)
                   for i in range(count)]
        return batches, describe_feeds(batches[0], generated_origin(runtime.inputs, seed, meta))
    encoder = None
    if text is not None or is_text_file(data):
        encoder = runtime.text_encoder.sized(sizes)
    elif sizes:
        raise InputError(f"--shape sets the size of generated or tokenized inputs; {data} has its own shapes: "
                         "drop --shape")
    feeds = read_feeds(source, runtime.inputs, limit=INPUT_BATCHES * batch, text=encoder)
    rows = sample_count(feeds, runtime.inputs)
    whole = unbatched(runtime.inputs) if encoder is None else []
    if whole:  # the data cannot be split into batches: it is timed as it is, one set a call
        if batch not in (1, rows):
            raise InputError(f"input {whole[0].name!r} ({format_shape(whole[0].shape)}) is not batched on its first "
                             f"axis, so {source} is run as it is, {rows} rows a call, not split into --batch {batch}; "
                             f"drop --batch, or give data of {batch} rows")
        origin = f"{source} as it is ({rows} row{'s' if rows != 1 else ''} a call)"
        return [feeds], {**describe_feeds(feeds, origin), "batch": rows}
    if rows < batch:
        raise InputError(f"{source} has {rows} {'sentences' if encoder else 'rows'}, fewer than --batch {batch}")
    count = min(INPUT_BATCHES, rows // batch)
    batches = [select_rows(feeds, runtime.inputs, slice(i * batch, (i + 1) * batch)) for i in range(count)]
    origin = (f"{count * batch} sentences of {source}, tokenized by {runtime.text_encoder.path.name}" if encoder
              else f"{count * batch} rows of {source}")
    return batches, describe_feeds(batches[0], origin)
