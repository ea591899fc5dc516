"""Bench reports for people and CI systems: JSON, JUnit XML, Markdown (and GitHub's step summary), HTML.

Every format carries the gate's verdict and the numbers behind it, so a CI log, a test view and a
pull-request summary each tell the same story.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ..data import format_inputs
from ..files import write_bytes_atomic
from .runner import BenchResult
from .stats import GATE_RULE, percentile_key

#: 2: own time, blocks and CPU times (``gate``, ``wall_stats``, ``descheduled``, ``cpu_ns``); later added
#: (optional, so the schema stays 2): ``inputs``, the shapes timed and where the inputs came from.
SCHEMA = 2


def overall(results: list[BenchResult]) -> bool | None:
    verdicts = [r.passed for r in results if r.passed is not None]
    return all(verdicts) if verdicts else None


def document(results: list[BenchResult], samples: bool = False) -> dict:
    """The JSON document: every result with its statistics and verdict (raw samples on request)."""
    return {"edgeml_bench": SCHEMA, "passed": overall(results),
            "environment": results[0].environment if results else {},
            "results": [r.to_dict(samples) for r in results]}


def junit_xml(results: list[BenchResult]) -> str:
    """One testcase per artifact x batch x threads; a failed gate is a <failure> with the numbers."""
    failures = sum(r.passed is False for r in results)
    total_s = sum(r.wall_stats["mean_ms"] * r.wall_stats["count"] for r in results) / 1e3
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites name="edgeml bench" tests="{len(results)}" failures="{failures}">',
             f'  <testsuite name="edgeml bench" tests="{len(results)}" failures="{failures}" errors="0" '
             f'time="{total_s:.3f}">']
    for r in results:
        seconds = r.wall_stats["mean_ms"] * r.wall_stats["count"] / 1e3
        lines.append(f'    <testcase classname="edgeml.bench.{escape(Path(r.artifact).stem)}" '
                     f'name={quoteattr(r.name)} time="{seconds:.3f}">')
        text = escape(details(r))
        if r.passed is False:
            lines.append(f"      <failure message={quoteattr(r.verdict())} type=\"LatencyGate\">{text}</failure>")
        lines.append(f"      <system-out>{text}</system-out>")
        lines.append("    </testcase>")
    lines += ["  </testsuite>", "</testsuites>", ""]
    return "\n".join(lines)


def details(r: BenchResult) -> str:
    s, d = r.stats, r.descheduled
    rows = [r.verdict(),
            f"{r.clock} time: p50 {s['p50_ms']:.4f} ms, p90 {s['p90_ms']:.4f} ms, p99 {s['p99_ms']:.4f} ms, "
            f"p99.9 {s['p99.9_ms']:.4f} ms, mean {s['mean_ms']:.4f} ms, spread (IQR/p50) {s['spread']:.1%}, "
            f"{s['count']} runs, {s['throughput_per_s']:.1f}/s",
            f"descheduled: {d['calls']} calls ({d['share']:.1%}), {d['lost_ms']:.1f} ms; block bounds "
            + ", ".join(f"{v:.4f}" for v in r.gate["block_values_ms"]) + " ms",
            f"load {r.load_ms:.1f} ms, first inference {r.first_ms:.2f} ms",
            *([f"inputs: {format_inputs(r.inputs)}"] if r.inputs else []),
            *r.notes]
    return "\n".join(rows)


def markdown(results: list[BenchResult]) -> str:
    verdict = {True: "✅ pass", False: "❌ FAIL", None: "ℹ️ info"}
    lines = ["### edgeml bench", "",
             "| artifact | batch | threads | p50 ms | p99 ms | descheduled | gated ms | budget ms | runs | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        s = r.stats
        budget = f"{r.budget_ms:g}" if r.budget_ms is not None else "-"
        lines.append(f"| `{Path(r.artifact).name}` | {r.batch} | {r.threads or 'default'} | {s['p50_ms']:.3f} | "
                     f"{s['p99_ms']:.3f} | {r.descheduled['share']:.1%} | {r.gated_ms:.3f} ({percentile_key(r.percentile)}) "
                     f"| {budget} | {s['count']} | {verdict[r.passed]} |")
    extra = [f"- {r.name}: inputs {_md(format_inputs(r.inputs))}" for r in results if r.inputs]
    extra += [f"- {r.name}: {r.comparison['summary']}" for r in results if r.comparison]
    extra += [f"- {r.name}: {note}" for r in results for note in r.notes]
    env = results[0].environment if results else {}
    clocks = sorted({r.clock for r in results})
    lines += ["", f"<sub>times: {' and '.join(clocks)} time per call (own: wall time less time descheduled); gated: "
              f"{GATE_RULE}</sub>", "", *extra, "" if extra else "",
              f"<sub>{env.get('cpu')}, {env.get('cores')} cores, ISA {', '.join(env.get('isa', [])) or '-'}, "
              f"{env.get('system')}, edgeml {env.get('edgeml')}</sub>", ""]
    return "\n".join(lines)


def _md(text: str) -> str:
    """Text as Markdown shows it literally: ``×`` shapes and file names with _ or * stay as written."""
    return "`" + text.replace("`", "'") + "`"


def write_reports(results: list[BenchResult], *, json_path=None, junit_path=None, markdown_path=None, html_path=None,
                  samples: bool = False) -> list[Path]:
    """Write the asked-for reports atomically; append the Markdown to $GITHUB_STEP_SUMMARY when set."""
    written = []
    if json_path:
        write_bytes_atomic(json_path, (json.dumps(document(results, samples), indent=2) + "\n").encode())
        written.append(Path(json_path))
    if junit_path:
        write_bytes_atomic(junit_path, junit_xml(results).encode())
        written.append(Path(junit_path))
    if html_path:
        from .html_report import write_html

        written.append(write_html(html_path, results))
    text = markdown(results)
    if markdown_path:
        write_bytes_atomic(markdown_path, text.encode())
        written.append(Path(markdown_path))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            if os.path.exists(summary) and not os.path.isfile(summary):  # a FIFO would block, a device is not a file
                raise OSError(0, "not a regular file")
            with open(summary, "a", encoding="utf-8") as f:
                f.write(text + "\n")
            written.append(Path(summary))
        except OSError as exc:  # the CI's summary is a courtesy: it must not turn a verdict into an error
            import warnings

            warnings.warn(f"could not append to $GITHUB_STEP_SUMMARY ({summary}): {exc.strerror}", stacklevel=2)
    return written


def check_writable(*paths) -> None:
    """Fail before measuring, not after, when a report cannot be written where asked: a missing folder, or a
    path that is a folder, a device or a FIFO (only regular files are replaced)."""
    from ..errors import InputError
    from ..files import check_target

    for path in paths:
        if path:
            check_target(path)
            folder = Path(path).resolve().parent
            if not folder.is_dir():
                raise InputError(f"cannot write the report {path}: its folder {folder} does not exist")
