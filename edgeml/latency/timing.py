"""The timing loops bench and its comparisons share: warm-up, then calls timed one by one.

Apart from ``runner`` (which plans a run) and ``compare`` (which judges it against a baseline or another
artifact), so that both time calls the same way and neither imports the other's loops.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable

#: The stop rule is checked between chunks of calls that last about this long, not after every call.
CHUNK_NS = 20_000_000


def warm_up(call: Callable[[], object], method) -> tuple[int, int]:
    """Run until both the warm-up time and count of ``method`` (a ``runner.Method``) are reached, never past its
    cap; returns (runs, ns)."""
    clock = time.perf_counter_ns
    start = clock()
    until = start + int(method.warmup_ms * 1e6)
    cap = start + int(method.max_seconds * 1e9)
    runs = 0
    while (runs < method.warmup_runs or clock() < until) and clock() < cap:
        call()
        runs += 1
    return runs, clock() - start


def timed_calls(call: Callable[[], object], count: int) -> tuple[list[int], list[int]]:
    """``count`` calls, each timed alone: wall ns, and the ns the calling thread was not kept waiting by other
    work ("cpu_ns"). On Linux that is wall less the thread's run-queue delay, which the kernel counts
    exactly (``/proc/thread-self/schedstat``, field 2: runnable but not running), so a call that waits on
    its own (sleeping, I/O, a blocking join) keeps its whole wall time. Elsewhere it is the thread's CPU
    clock. Either is read once per call, outside the wall interval; its interval also spans the loop's own
    steps, a constant that ``own_times`` counts with the runtime's waiting."""
    clock = time.perf_counter_ns
    wall, marks = [0] * count, [0] * (count + 1)
    with _run_queue_delay() as delay:
        read = delay or time.thread_time_ns
        marks[0] = read()
        for i in range(count):
            t0 = clock()
            call()
            t1 = clock()
            marks[i + 1] = read()
            wall[i] = t1 - t0
    if delay is None:
        return wall, [b - a for a, b in zip(marks, marks[1:])]
    delays = [int(m.split()[1]) for m in marks]  # parsed after the loop, to keep each iteration short
    return wall, [max(w - (b - a), 0) for w, a, b in zip(wall, delays, delays[1:])]


@contextlib.contextmanager
def _run_queue_delay():
    """A reader of the calling thread's schedstat line (Linux; field 2 is the run-queue delay in ns), or None."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        yield None
        return
    try:
        yield lambda: os.pread(fd, 128, 0)  # raw: "cpu_ns run_delay_ns timeslices"
    finally:
        os.close(fd)


def time_calls(call: Callable[[], object], method, needed: int,
               per_call_ns: float) -> tuple[list[int], list[int], bool]:
    """Timed calls until >= ``needed`` and >= min_runs and >= min_seconds, or the cap, checked between chunks
    of about ``CHUNK_NS``; returns (wall ns, cpu ns, extended: whether ``needed`` made the run longer)."""
    clock = time.perf_counter_ns
    chunk = int(min(max(CHUNK_NS / max(per_call_ns, 1), 1), 10_000))
    wall: list[int] = []
    cpu: list[int] = []
    start = clock()
    min_done = start + int(method.min_seconds * 1e9)
    cap = start + int(method.max_seconds * 1e9)
    extended = False
    while True:
        w, c = timed_calls(call, min(chunk, method.max_runs - len(wall)))
        wall += w
        cpu += c
        now, n = clock(), len(wall)
        if n >= method.min_runs and now >= min_done:
            if n >= needed:
                break
            extended = True
        if n >= method.max_runs or now >= cap:
            break
    return wall, cpu, extended
