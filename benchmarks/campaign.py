"""Rerun the bad-input campaign of issue 8 against the edgeml CLI and print the counts.

Every case of benchmarks/bad_inputs.py runs as its own ``python -m edgeml.cli`` process, in its own folder
(its cwd, TMPDIR and output folder), under a timeout (a timeout is a hang) and an address-space limit
(an unbounded allocation fails there instead of taking the machine down). Prints: cases, successes,
failed gates, clean errors, then the counts that must be 0 (internal errors, hangs, wrong verdicts,
unclean messages, partial files, code executions), each failing case on one line. Exits 1 when any of
those counts is not 0.

    python benchmarks/campaign.py [--quick] [--workers 2] [--timeout 60] [--only TEXT] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bad_inputs  # noqa: E402
from bad_inputs import Case, Outcome  # noqa: E402

#: Address space a case may use: a few GB is plenty for tiny models; 99999999999-row inputs are not.
MEMORY_LIMIT = 8 << 30
#: Runs the CLI as ``python -m edgeml.cli`` does, under the memory limit.
LAUNCHER = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            "sys.argv = ['edgeml', *sys.argv[1:]]; runpy.run_module('edgeml.cli', run_name='__main__')")


@dataclass
class Tally:
    """The counts: a case without problems is a success, an expected failed gate or a clean error; a case
    with problems counts once under each kind it shows."""

    cases: int = 0
    successes: int = 0
    gate_failures: int = 0
    clean_errors: int = 0
    problems: dict = field(default_factory=dict)  # kind -> [(case id, detail)]

    KINDS = ("internal error", "hang", "wrong verdict", "unclean message", "partial files", "code execution")

    def add(self, case: Case, outcome: Outcome, problems: list[str]) -> None:
        self.cases += 1
        if not problems:
            if outcome.code == 0:
                self.successes += 1
            elif outcome.code == 1:
                self.gate_failures += 1
            else:
                self.clean_errors += 1
        for problem in problems:
            kind, _, detail = problem.partition(": ")
            self.problems.setdefault(kind, []).append((case.id, detail))

    def count(self, kind: str) -> int:
        return len({case for case, _ in self.problems.get(kind, [])})


def run_case(case: Case, fixtures: Path, work: Path, timeout: float) -> tuple[Outcome, list[str]]:
    """Run ``case`` in its own process and folder ``work``; returns the outcome and what went wrong."""
    before = bad_inputs.prepare(case, work)
    env = {**bad_inputs.common_env(fixtures, work), **case.env_for(fixtures, work)}
    command = [sys.executable, "-c", LAUNCHER.format(limit=MEMORY_LIMIT), *case.argv_for(fixtures, work)]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the process and anything it started
        output, _ = process.communicate()
        code = None
    outcome = Outcome(code, output.decode("utf-8", "replace"), time.perf_counter() - start)
    return outcome, bad_inputs.judge(case, outcome, work, before, fixtures)


def quick_sample(cases: list[Case], every: int = 25) -> list[Case]:
    """The cases issue 8 names, and every ``every``-th of the others: a fixed sample of each group."""
    others = [c for c in cases if not c.issue]
    return [c for c in cases if c.issue] + others[::every]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="issue 8's cases and a fixed sample of the rest")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=bad_inputs.TIMEOUT_S, help="seconds before a case is a hang")
    parser.add_argument("--only", help="run the cases whose id contains this text")
    parser.add_argument("--fixtures", type=Path, help="build the fixtures here (and keep them); default: a temp folder")
    parser.add_argument("--json", type=Path, help="write the counts and failing cases here")
    args = parser.parse_args(argv)

    cases = bad_inputs.cases()
    if args.quick:
        cases = quick_sample(cases)
    if args.only:
        cases = [c for c in cases if args.only in c.id]
    with tempfile.TemporaryDirectory(prefix="edgeml-campaign-") as scratch:
        fixtures = args.fixtures or Path(scratch) / "fixtures"
        start = time.perf_counter()
        if not (fixtures / "tiny.onnx").exists():
            bad_inputs.build_fixtures(fixtures)
        print(f"fixtures in {fixtures} ({time.perf_counter() - start:.0f} s); {len(cases)} cases, "
              f"{args.workers} workers, timeout {args.timeout:g} s", file=sys.stderr)
        tally, times = Tally(), []
        with ThreadPoolExecutor(args.workers) as pool:
            futures = {pool.submit(_run_and_clean, case, fixtures, Path(scratch) / f"case{i}", args.timeout): case
                       for i, case in enumerate(cases)}
            for done, future in enumerate(as_completed(futures), 1):
                case = futures[future]
                outcome, problems = future.result()
                tally.add(case, outcome, problems)
                times.append((outcome.seconds, case.id))
                for problem in problems:
                    print(f"  {case.id}: {problem}", file=sys.stderr)
                if done % 50 == 0:
                    print(f"[{done}/{len(cases)}] {time.perf_counter() - start:.0f} s", file=sys.stderr)
    _report(tally, times, time.perf_counter() - start)
    if args.json:
        args.json.write_text(json.dumps(_document(tally), indent=2, ensure_ascii=False) + "\n")
    return 1 if any(tally.count(kind) for kind in Tally.KINDS) else 0


def _run_and_clean(case: Case, fixtures: Path, work: Path, timeout: float):
    try:
        return run_case(case, fixtures, work, timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report(tally: Tally, times: list, seconds: float) -> None:
    troubled = tally.cases - tally.successes - tally.gate_failures - tally.clean_errors
    print(f"\n{tally.cases} cases in {seconds:.0f} s: {tally.successes} successes, {tally.gate_failures} failed gates "
          f"as expected, {tally.clean_errors} clean errors, {troubled} with problems")
    for kind in Tally.KINDS:
        print(f"  {kind + 's' if not kind.endswith('s') else kind}: {tally.count(kind)}")
    for kind in Tally.KINDS:
        for case, detail in sorted(tally.problems.get(kind, [])):
            print(f"{kind}: {case}: {detail}")
    slowest = sorted(times, reverse=True)[:5]
    print("slowest: " + ", ".join(f"{case} {s:.1f} s" for s, case in slowest))


def _document(tally: Tally) -> dict:
    return {"cases": tally.cases, "successes": tally.successes, "failed_gates": tally.gate_failures,
            "clean_errors": tally.clean_errors, "counts": {kind: tally.count(kind) for kind in Tally.KINDS},
            "failures": {kind: [f"{c}: {d}" for c, d in sorted(items)] for kind, items in tally.problems.items()}}


if __name__ == "__main__":
    sys.exit(main())
