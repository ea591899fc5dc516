"""``--html``: one self-contained HTML page per bench run, which opens offline.

The page holds the summary table, the notes, the environment fingerprint and, per result, a latency
histogram and an empirical CDF drawn as inline SVG by this module (numpy only: no plotting library, no
script, no external font or style sheet, no URL at all). Both plots show the samples the gate judged
(each call's own time unless the run judged wall time), the budget line and the gated value, so a
failed gate can be read off the picture.
"""

from __future__ import annotations

from datetime import datetime, timezone
import json
import math
import os
from html import escape
from pathlib import Path

import numpy as np

from ..data import format_inputs
from .stats import DESCHEDULED, GATE_RULE, percentile_key

#: Plot size in SVG user units; the page shows two plots side by side at 1200 px.
WIDTH, HEIGHT = 560, 320
#: Plot margins (left, right, top, bottom): room for tick labels, axis titles and line labels.
MARGIN = (70, 18, 44, 58)
#: A budget further from the data than this many data spans (on the axis's scale) is drawn as an
#: off-scale arrow, so that a generous budget does not squash the distribution into a sliver.
BUDGET_REACH = 1.5
#: The CDF's x axis turns logarithmic when the slowest call is this many times the median, the
#: histogram's when its (clipped) range spans this many times its fastest call.
LOG_TAIL = 5.0
LOG_SPREAD = 3.0

#: A white outline under line labels keeps them legible where they cross a line or a bar.
HALO = {"stroke": "#fff", "stroke_width": 3, "paint_order": "stroke"}
COLORS = {"bar": "#4c78a8", "curve": "#1f4e79", "budget": "#cf222e", "gate": "#9a6700", "grid": "#e4e7eb"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;
 margin:0;background:#f6f8fa}
main{max-width:1160px;margin:0 auto;padding:20px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:26px 0 8px}h3{font-size:15px;margin:0 0 6px}
.sub{color:#57606a;margin:0 0 14px}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 6px;text-align:right;white-space:nowrap}
td.name{white-space:normal}
th{background:#eef1f4;font-weight:600}td.l,th.l{text-align:left}
.v{font-weight:700;color:#fff;border-radius:4px;padding:1px 7px}
.PASS{background:#1a7f37}.FAIL{background:#cf222e}.INFO{background:#57606a}
section.r{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 14px;margin:14px 0}
.verdict{margin:2px 0 8px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.plots svg{width:100%;height:auto;border:1px solid #eaeef2;background:#fff}
dl.env{display:grid;grid-template-columns:repeat(3,max-content 1fr);gap:3px 12px;background:#fff;margin:0;
 border:1px solid #d0d7de;padding:8px 12px}dl.env dt{font-weight:600}dl.env dd{margin:0}
ul{margin:4px 0;padding-left:20px}.muted{color:#57606a}
"""


def verdict_word(result) -> str:
    """PASS/FAIL when a gate was set, INFO when the run only measured."""
    return {True: "PASS", False: "FAIL"}.get(result.passed, "INFO")


def render_html(results: list, title: str = "edgeml bench") -> str:
    """The whole report as one HTML string (BenchResults, in the order they ran)."""
    from .. import __version__

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{escape(title)}</h1>",
            f'<p class="sub">{len(results)} result{"s" if len(results) != 1 else ""} · generated {stamp} by edgeml '
            f"{escape(__version__)}</p>"]
    if not results:
        body.append("<p>No results.</p>")
    else:
        body += [_summary_table(results), _notes(results), _environment(results)]
        body += [_result_section(i, r) for i, r in enumerate(results)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head>\n<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")


def write_html(path: str | os.PathLike, results: list, title: str = "edgeml bench") -> Path:
    """Write the report atomically, so no half-written file is left behind."""
    from ..files import write_bytes_atomic

    write_bytes_atomic(path, render_html(results, title).encode("utf-8"))
    return Path(path)


# ---------------------------------------------------------------------------------------------- tables


def _ms(value) -> str:
    """Milliseconds with at least 3 significant digits, so 0.0123 and 123 both read well."""
    if value is None or not math.isfinite(value):
        return "–"
    if value >= 10 or value <= 0:
        return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    return f"{value:.{min(max(3, 2 - math.floor(math.log10(value))), 7)}f}"


def _summary_table(results) -> str:
    head = ["name", "backend / device", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "mean ms", "spread",
            "descheduled", "samples /s", "gated ms", "budget ms", "verdict"]
    rows = []
    for i, r in enumerate(results):
        s, word, key = r.stats, verdict_word(r), percentile_key(r.percentile)
        cells = [f'<td class="l name"><a href="#r{i}">{escape(r.name)}</a></td>',
                 f'<td class="l">{escape(f"{r.backend} / {r.device}")}</td>', f"<td>{s['count']:,}</td>",
                 *(f"<td>{_ms(s.get(k))}</td>" for k in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "mean_ms")),
                 f"<td>{s['spread']:.1%}</td>", f"<td>{r.descheduled['share']:.1%}</td>",
                 f"<td>{s['throughput_per_s']:,.0f}</td>",
                 f"<td>{escape(key)} {_ms(r.gated_ms)}</td>",
                 f"<td>{'–' if r.budget_ms is None else escape(f'{r.budget_ms:g}')}</td>",
                 f'<td><span class="v {word}">{word}</span></td>']
        rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f'<th class="l">{h}</th>' if h in ("name", "backend / device") else f"<th>{h}</th>" for h in head)
    return (f"<h2>Summary</h2><table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            '<p class="muted">Times are each call\'s own time (wall time less the time its thread was descheduled) '
            "unless the run judged wall time. spread: the interquartile range over the median. descheduled: the "
            f"calls that lost over {DESCHEDULED:.0%} of their time to other work. gated: {GATE_RULE}, judged against "
            "the budget.</p>")


def _notes(results) -> str:
    items = [f"<li>{escape(r.name + ': ' if len(results) > 1 else '')}{escape(note)}</li>"
             for r in results for note in r.notes]
    return "<h2>Notes</h2>" + (f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">None.</p>')


def _env_value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "–"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "–"
    return "–" if value is None else str(value)


def _environment(results) -> str:
    """One fingerprint per distinct environment (usually one for the whole run), as compact key/value pairs."""
    groups: dict[str, list] = {}
    for r in results:
        groups.setdefault(json.dumps(r.environment, sort_keys=True, default=str), []).append(r)
    parts = ["<h2>Environment</h2>"]
    for members in groups.values():
        if len(groups) > 1:
            parts.append(f"<h3>{escape(', '.join(r.name for r in members))}</h3>")
        pairs = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(_env_value(v))}</dd>"
                        for k, v in members[0].environment.items())
        parts.append(f'<dl class="env">{pairs}</dl>' if pairs else '<p class="muted">None recorded.</p>')
    return "".join(parts)


def _result_section(index: int, r) -> str:
    word = verdict_word(r)
    facts = (f"artifact {r.artifact} · load {_ms(r.load_ms)} ms · first inference {_ms(r.first_ms)} ms · "
             f"min {_ms(r.stats['min_ms'])} ms · max {_ms(r.stats['max_ms'])} ms")
    if r.inputs:
        facts += f" · inputs {format_inputs(r.inputs)}"
    samples = np.asarray(r.gated_samples_ns if len(r.samples_ns) else [], dtype=np.float64) / 1e6
    plots = (f'<div class="plots">{histogram_svg(r, samples)}{cdf_svg(r, samples)}</div>' if len(samples) else
             '<p class="muted">No raw samples in this result (save them with --save-samples): no plots.</p>')
    return (f'<section class="r" id="r{index}"><h3><span class="v {word}">{word}</span> {escape(r.name)}</h3>'
            f'<p class="verdict">{escape(r.verdict())}</p><p class="muted">{escape(facts)}</p>{plots}</section>')


# ---------------------------------------------------------------------------------------------- plots


class _Axis:
    """Maps data values to pixels, linear or log10, and picks readable ticks."""

    def __init__(self, lo: float, hi: float, px0: float, px1: float, log: bool = False):
        if log:
            lo = max(lo, 1e-9)
        if hi <= lo:  # all samples equal: give the axis some width
            pad = abs(lo) * 0.05 or 1e-3
            lo, hi = (lo - pad if not log else lo / 1.1), hi + pad
        self.lo, self.hi, self.px0, self.px1, self.log = lo, hi, px0, px1, log

    def _t(self, v):
        return math.log10(max(v, 1e-12)) if self.log else v

    def __call__(self, v: float) -> float:
        a, b = self._t(self.lo), self._t(self.hi)
        return self.px0 + (self._t(v) - a) / (b - a) * (self.px1 - self.px0)

    def inside(self, v: float) -> bool:
        return self.lo <= v <= self.hi

    def ticks(self, count: int = 6) -> list[float]:
        if self.log:
            decades = range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
            for steps in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
                ticks = [t for t in (round(m * 10.0**e, 12) for e in decades for m in steps) if self.inside(t)]
                if len(ticks) >= 5:
                    return ticks
            if len(ticks) >= 3:
                return ticks
        step = _nice_step((self.hi - self.lo) / count)
        first = math.ceil(self.lo / step - 1e-9) * step
        return [round(first + i * step, 12) for i in range(int((self.hi - first) / step + 1e-9) + 1)]


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten: tick steps people can read."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _num(v: float) -> str:
    return f"{v:.4g}"


def _svg(parts: list[str], label: str) -> str:
    return (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
            f'font-family="system-ui,Arial,sans-serif" font-size="12">' + "".join(parts) + "</svg>")


def _text(x, y, s, anchor="middle", **attrs) -> str:
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(s)}</text>'


def _frame(x: _Axis, y: _Axis, title: str, xlabel: str, ylabel: str, yticks, ylabels) -> list[str]:
    """Grid, ticks, tick labels, axis titles and the plot title."""
    left, right, top, bottom = x.px0, x.px1, y.px1, y.px0
    out = [_text(WIDTH / 2, 18, title, font_size=14, font_weight="600")]
    labelled = -math.inf
    for t in x.ticks():
        px = x(t)
        out.append(f'<line class="grid" x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" '
                   f'stroke="{COLORS["grid"]}"/>')
        if px - labelled >= 40:  # dense log ticks: keep the grid line, drop a label that would collide
            out.append(_text(px, bottom + 16, _num(t)))
            labelled = px
    for t, lab in zip(yticks, ylabels):
        py = y(t)
        out.append(f'<line class="grid" x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" '
                   f'stroke="{COLORS["grid"]}"/>')
        out.append(_text(left - 6, py + 4, lab, anchor="end"))
    out.append(f'<rect class="frame" x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
               'fill="none" stroke="#8c959f"/>')
    out.append(_text((left + right) / 2, bottom + 34, xlabel))
    out.append(_text(14, (top + bottom) / 2, ylabel, transform=f"rotate(-90 14 {(top + bottom) / 2:.1f})"))
    return out


def _x_range(r, samples: np.ndarray, hi: float, log: bool = False) -> tuple[float, float]:
    """The data range, widened to show the gated value and a budget that is not far off, plus a margin."""
    t = np.log10 if log else (lambda v: v)
    hi = max(hi, r.gated_ms)
    lo = float(samples.min()) if not log else max(float(samples.min()), hi * 1e-6)  # a 0 ms call has no log
    if hi - lo < 1e-3 * hi:  # (nearly) all samples equal: give the axis 5% either side
        lo, hi = lo * 0.95, hi * 1.05
    span = t(hi) - t(lo)
    if r.budget_ms is not None and t(lo) - BUDGET_REACH * span <= t(r.budget_ms) <= t(hi) + BUDGET_REACH * span:
        lo, hi = min(lo, r.budget_ms), max(hi, r.budget_ms)
    if log:
        return lo / 1.08, hi * 1.08
    span = max(hi - lo, 1e-9)
    return max(lo - 0.03 * span, 0.0), hi + 0.04 * span


def _marker(x: _Axis, y: _Axis, value: float, cls: str, label: str, row: int) -> list[str]:
    """A labelled vertical line; off-scale values get an arrow at the edge, so they are never silently lost."""
    color, top, bottom = COLORS[cls], y.px1, y.px0
    label_y = top - 6 if row == 0 else top + 14
    if x.inside(value):
        px = x(value)
        dash = ' stroke-dasharray="6 4"' if cls == "gate" else ""
        if row == 0:  # above the plot, centred on the line but kept inside the frame
            anchor, px_label = "middle", min(max(px, x.px0 + 60), x.px1 - 60)
        else:  # inside the plot, on the side of the line with more room
            anchor, px_label = ("end", px - 4) if px > (x.px0 + x.px1) / 2 else ("start", px + 4)
        return [f'<line class="{cls}" data-ms="{value:g}" x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" '
                f'stroke="{color}" stroke-width="2"{dash}/>',
                _text(px_label, label_y, label, anchor=anchor, fill=color, font_weight="600", class_=f"{cls}-label",
                      **HALO)]
    right = value > x.hi
    px = x.px1 - 4 if right else x.px0 + 4
    arrow = f"{label} →" if right else f"← {label}"
    return [f'<line class="{cls} offscale" data-ms="{value:g}" x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" '
            f'stroke="{color}" stroke-width="2" stroke-dasharray="2 3"/>',
            _text(px - 4 if right else px + 4, label_y, arrow, anchor="end" if right else "start", fill=color,
                  font_weight="600", class_=f"{cls}-label", **HALO)]


def _markers(r, x: _Axis, y: _Axis) -> list[str]:
    key = percentile_key(r.percentile)
    out = _marker(x, y, r.gated_ms, "gate", f"gated {key} {_ms(r.gated_ms)} ms", 1)
    if r.budget_ms is not None:
        out += _marker(x, y, r.budget_ms, "budget", f"budget {r.budget_ms:g} ms", 0)
    return out


def _xlabel(r, log: bool) -> str:
    return f"{r.clock} time per call (ms{', log scale' if log else ''})"


def _bin_edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Freedman-Diaconis bins (10 to 90 of them), equal in width on the axis's own scale."""
    t = np.log10(values) if log else values
    lo, hi = float(t.min()), float(t.max())
    if hi <= lo:
        hi = lo + (0.01 if log else max(abs(lo) * 0.01, 1e-6))
    q75, q25 = np.percentile(t, [75, 25])
    width = 2 * (q75 - q25) / len(t) ** (1 / 3)
    bins = int(np.clip((hi - lo) / width if width > 0 else 10, 10, 90))
    edges = np.linspace(lo, hi, bins + 1)
    return 10.0**edges if log else edges


def histogram_svg(r, samples: np.ndarray) -> str:
    """Calls per latency bin. A long tail is clipped (and counted) so that the body stays readable: at
    p99.9, or nearer when a few outliers lie far out (past the gated value + 2 x (p99 - p50)); when the
    rest still spans a wide range the x axis and the bins turn logarithmic."""
    p50, p99, p999 = np.quantile(samples, [0.5, 0.99, 0.999], method="inverted_cdf")
    clip = float(min(p999, max(p99, r.gated_ms) + 2 * (p99 - p50), samples.max()))
    shown = samples[samples <= clip]
    beyond = len(samples) - len(shown)
    log = float(shown.min()) > 0 and clip / float(shown.min()) > LOG_SPREAD
    left, right, top, bottom = MARGIN[0], WIDTH - MARGIN[1], MARGIN[2], HEIGHT - MARGIN[3]
    x = _Axis(*_x_range(r, shown, clip, log), left, right, log=log)
    counts, edges = np.histogram(shown, bins=_bin_edges(shown, log))
    y = _Axis(0, float(counts.max()) * 1.2, bottom, top)
    yticks = [t for t in y.ticks(5) if t == int(t)]
    out = _frame(x, y, "Latency histogram", _xlabel(r, log), "calls", yticks,
                 [_count(t) for t in yticks])
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if c:
            x0, x1, py = x(a), x(b), y(c)
            out.append(f'<rect class="bar" x="{x0:.2f}" y="{py:.2f}" width="{max(x1 - x0 - 0.6, 0.8):.2f}" '
                       f'height="{bottom - py:.2f}" fill="{COLORS["bar"]}"><title>{_ms(a)}–{_ms(b)} ms: {c} calls'
                       "</title></rect>")
    out += _markers(r, x, y)
    if beyond:
        out.append(_text((left + right) / 2, HEIGHT - 6, f"{beyond:,} slowest call{'s' if beyond > 1 else ''} "
                         f"({beyond / len(samples):.2%}) beyond {_ms(clip)} ms not shown; max {_ms(samples.max())} ms",
                         fill="#57606a", font_size=11, class_="clipped"))
    return _svg(out, f"latency histogram of {r.name}")


def _count(n: float) -> str:
    """Compact tick labels (30k), so they fit beside the axis title."""
    return f"{n / 1000:g}k" if n >= 10_000 else f"{int(n):,}"


#: CDF y axis ticks: share of calls at or below a latency, on a scale that spreads the tail (1 - F, log).
_CDF_TICKS = (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999)


def _nines(share):
    """-log10(1 - share): 90% -> 1, 99% -> 2, 99.9% -> 3, so each "nine" of the tail gets the same height."""
    return -np.log10(1 - np.minimum(share, 1 - 1e-12))


def cdf_svg(r, samples: np.ndarray) -> str:
    """Empirical CDF on a "nines" scale (0, 50, 90, 99, 99.9 %): the percentiles a gate judges get room."""
    ordered = np.sort(samples)
    n = len(ordered)
    left, right, top, bottom = MARGIN[0], WIDTH - MARGIN[1], MARGIN[2], HEIGHT - MARGIN[3]
    median = float(np.median(ordered))
    log = median > 0 and float(ordered[-1]) / median > LOG_TAIL
    x = _Axis(*_x_range(r, ordered, float(ordered[-1]), log), left, right, log=log)
    y_top = float(_nines(1 - 0.5 / n))  # the last sample's plotting position (Hazen: (i - 0.5) / n)
    y = _Axis(0.0, y_top * 1.02, bottom, top)
    ticks = [t for t in _CDF_TICKS if _nines(t) <= y_top * 1.02]
    out = _frame(x, y, "Empirical CDF", _xlabel(r, log), "calls at or below",
                 [float(_nines(t)) for t in ticks], [f"{t * 100:g}%" for t in ticks])
    # one point per sample at its Hazen position (i - 0.5) / n, which stays finite on this scale; long runs
    # keep 1500 evenly spaced samples and all of the slowest 300, where the gate looks
    ys = _nines((np.arange(1, n + 1) - 0.5) / n)
    keep = np.unique(np.concatenate([np.linspace(0, n - 1, min(n, 1500)).astype(int), np.arange(max(n - 300, 0), n)]))
    pts = " ".join(f"{x(float(ordered[i])):.1f},{y(float(ys[i])):.1f}" for i in keep)
    out.append(f'<polyline class="cdf" points="{pts}" fill="none" stroke="{COLORS["curve"]}" stroke-width="2"/>')
    level = float(_nines(r.percentile / 100)) if r.percentile < 100 else y_top
    if level <= y.hi:
        py = y(level)
        out.append(f'<line class="gate-level" x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" '
                   f'stroke="{COLORS["gate"]}" stroke-dasharray="3 3"/>')
        if x.inside(r.gated_ms):
            out.append(f'<circle class="gate-point" cx="{x(r.gated_ms):.1f}" cy="{py:.1f}" r="4.5" '
                       f'fill="{COLORS["gate"]}"/>')
    out += _markers(r, x, y)
    return _svg(out, f"latency CDF of {r.name}")
