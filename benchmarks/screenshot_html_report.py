"""Screenshot of the ``--html`` bench report, for the README (docs/bench-report.png).

Builds a small real model (a torch MLP on 64 features, converted to a checked ONNX file), benches it at
batch 1 and batch 32 against one budget set between their p99s in a short pilot run (so that batch 1
passes and batch 32 fails), writes the HTML report and opens it in headless Chromium (Debian's
``chromium``), offline.

    python benchmarks/screenshot_html_report.py [--out docs/bench-report.png] [--html report.html] [--seconds 1]
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import edgeml
from edgeml.latency.html_report import write_html
from edgeml.latency.runner import Method, bench_sweep

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 32)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1200,1400"]


def build_model(folder: Path) -> Path:
    """A 64-256-256-10 MLP, exported by edgeml (which checks the ONNX file against torch)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    result = edgeml.convert(model, "onnx", folder, inputs=["x:1x64"], dynamic_batch=True, name="mlp")
    return result.artifacts[0].path


def screenshot(html: Path, png: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                        html.resolve().as_uri()], check=True, timeout=120, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-report.png")
    parser.add_argument("--html", type=Path, help="also keep the HTML report here")
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum measuring time per result")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        artifact = build_model(tmp / "build")
        # a budget between the two batch sizes' p99, so that the picture shows a PASS and a FAIL
        small, large = bench_sweep(artifact, batches=BATCHES, method=Method(min_seconds=0.3))
        budget = float(f"{math.sqrt(small.stats['p99_ms'] * large.stats['p99_ms']):.2g}")
        results = bench_sweep(artifact, batches=BATCHES, budget_ms=budget, method=Method(min_seconds=args.seconds))
        html = write_html(args.html or tmp / "report.html", results, title="edgeml bench: mlp.onnx")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(html, args.out)
    for r in results:
        print(f"{r.name}: {r.verdict()}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
