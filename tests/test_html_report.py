"""The --html report: one self-contained page whose plots show the samples, the budget and the verdict."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest

from edgeml.latency.html_report import render_html, write_html
from edgeml.latency.runner import BenchResult, Method, analyse, bench


def synthetic(samples_ms, budget_ms=None, percentile=99.0, name="model.onnx", notes=()) -> BenchResult:
    """A BenchResult as bench() builds it, from given samples (never descheduled: CPU = wall): deterministic
    plots, no timing noise."""
    samples = [int(round(v * 1e6)) for v in samples_ms]
    return BenchResult(artifact=f"build/{name}", backend="onnxruntime", device="cpu", batch=1, threads=None,
                       load_ms=4.0, first_ms=1.5, warmup_runs=10, warmup_ms=200.0, percentile=percentile,
                       budget_ms=budget_ms, **analyse(samples, samples, 1, percentile, "own"),
                       environment={"cpu": "Test CPU", "cores": 2, "isa": ["avx2"]}, notes=list(notes),
                       samples_ns=samples, cpu_ns=samples)


def lognormal_ms(n=3000, median=2.0, seed=0):
    return np.random.default_rng(seed).lognormal(np.log(median), 0.1, n)


class Page(HTMLParser):
    """Tags with their attributes, and the text inside each element (by class), from the report."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def verdicts(self) -> list[str]:
        return [a["class"].split()[1] for t, a in self.tags if t == "span" and "v" in a.get("class", "").split()]


def svgs(page: str) -> list[ET.Element]:
    """Every inline SVG, parsed as XML: the plots must be well-formed on their own."""
    found = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    return [ET.fromstring(s) for s in found]


def by_class(svg: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in svg.iter(tag) if cls in e.get("class", "").split()]


def texts(svg: ET.Element, cls: str) -> list[str]:
    return ["".join(e.itertext()) for e in by_class(svg, "text", cls)]


def check_plots(page: str, result: BenchResult) -> tuple[ET.Element, ET.Element]:
    histogram, cdf = svgs(page)
    assert len(by_class(histogram, "rect", "bar")) >= 10
    (curve,) = by_class(cdf, "polyline", "cdf")
    points = [tuple(map(float, p.split(","))) for p in curve.get("points").split()]
    assert len(points) >= 100
    assert all(b[0] >= a[0] and b[1] <= a[1] for a, b in zip(points, points[1:]))  # rises to the right
    for svg in (histogram, cdf):
        (gate,) = by_class(svg, "line", "gate")
        assert float(gate.get("data-ms")) == pytest.approx(result.gated_ms, rel=1e-3)
        assert texts(svg, "gate-label") == [f"gated p99 {result.gated_ms:.3f} ms"]
    return histogram, cdf


def budget_line(svg: ET.Element, budget: float) -> ET.Element:
    (line,) = by_class(svg, "line", "budget")
    assert float(line.get("data-ms")) == budget
    assert texts(svg, "budget-label") == [f"budget {budget:g} ms"]
    return line


def test_passing_result_shows_plots_budget_line_and_pass():
    result = synthetic(lognormal_ms(), budget_ms=2.8, notes=["a note <with> markup"])
    assert result.passed is True
    page = render_html([result], title="nightly bench")
    parsed = Page(page)
    assert parsed.verdicts() == ["PASS", "PASS"]  # the summary row and the result's heading
    histogram, cdf = check_plots(page, result)
    for svg in (histogram, cdf):
        line, (gate,) = budget_line(svg, 2.8), by_class(svg, "line", "gate")
        assert float(line.get("x1")) > float(gate.get("x1"))  # the budget lies right of the gated value
    body = "".join(parsed.text)
    assert "nightly bench" in body and "a note <with> markup" in body and "Test CPU" in body
    assert "a note <with> markup" not in page  # escaped in the source, intact on screen
    assert result.verdict() in body


def test_failing_result_puts_budget_left_of_the_gated_value_and_says_fail():
    ok = synthetic(lognormal_ms(median=1.0), budget_ms=2.0, name="fast.onnx")
    slow = synthetic(lognormal_ms(median=3.0), budget_ms=2.0, name="slow.onnx")
    assert (ok.passed, slow.passed) == (True, False)
    page = render_html([ok, slow])
    assert Page(page).verdicts() == ["PASS", "FAIL", "PASS", "FAIL"]
    rows = re.findall(r"<tr><td class=\"l name\">.*?</tr>", page)
    assert len(rows) == 2 and "fast.onnx" in rows[0] and ">FAIL<" in rows[1]
    plots = svgs(page)
    assert len(plots) == 4
    check_plots(render_html([slow]), slow)
    for svg in plots[2:]:
        line, (gate,) = budget_line(svg, 2.0), by_class(svg, "line", "gate")
        assert float(line.get("x1")) < float(gate.get("x1"))
    assert "OVER budget 2 ms" in "".join(Page(page).text)


def test_page_needs_no_network_and_no_script():
    page = render_html([synthetic(lognormal_ms(), budget_ms=2.5, name="<script>alert(1)</script>.onnx")],
                       title="<b>title</b>")
    tags = Page(page).tags
    assert not re.search(r"https?:|//[a-z0-9]", page, flags=re.I)
    assert "url(" not in page and "@import" not in page
    assert {t for t, _ in tags}.isdisjoint({"script", "link", "img", "iframe", "object", "embed", "b"})
    for _, attrs in tags:
        assert "src" not in attrs
        assert attrs.get("href", "#").startswith("#")
        assert not any(k.startswith("on") for k in attrs)


def test_long_tail_is_clipped_and_counted():
    samples = np.concatenate([lognormal_ms(), [40.0, 55.0, 80.0]])  # three stalls, 20-40x the median
    result = synthetic(samples, budget_ms=5.0)
    histogram, cdf = svgs(render_html([result]))
    (note,) = texts(histogram, "clipped")
    assert note.startswith("3 slowest calls") and "max 80.0 ms" in note
    assert max(float(r.get("x")) + float(r.get("width")) for r in by_class(histogram, "rect", "bar")) < 560
    assert "log scale" in "".join(cdf.itertext())  # the CDF keeps every sample on a log axis


def test_without_budget_is_info_and_without_samples_has_no_plots():
    result = synthetic(lognormal_ms())
    page = render_html([result])
    assert Page(page).verdicts() == ["INFO", "INFO"]
    assert all(not by_class(svg, "line", "budget") for svg in svgs(page))
    result.samples_ns = []
    page = render_html([result])
    assert svgs(page) == [] and "--save-samples" in page


def test_real_bench_run_renders_and_writes(tmp_path):
    """A real run, judged on structure only: where the budget lands depends on this machine's load."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [weight])
    model = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    method = Method(warmup_ms=10, min_runs=10, min_seconds=0.05, max_seconds=5)
    results = [bench(model, method=method), bench(model, budget_ms=1e-6, method=method)]
    path = write_html(tmp_path / "report.html", results, title="tiny")
    page = path.read_text(encoding="utf-8")
    assert Page(page).verdicts() == ["INFO", "FAIL", "INFO", "FAIL"]
    plots = svgs(page)
    assert len(plots) == 4 and all(len(by_class(svg, "line", "gate")) == 1 for svg in plots)
    assert [len(by_class(svg, "line", "budget")) for svg in plots] == [0, 0, 1, 1]
    assert all(len(by_class(svg, "rect", "bar")) >= 1 for svg in plots[::2])
    assert all(len(by_class(svg, "polyline", "cdf")) == 1 for svg in plots[1::2])
    assert "own time per call" in "".join(plots[0].itertext())
    assert not list(tmp_path.glob(".*.tmp"))
