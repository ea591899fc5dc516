"""The performance suite: edgeml side by side with what users run today, on reference models built here.

For each model (benchmarks/models.py): convert it with edgeml (timed, checked), quantize it where it
applies, then time in one process, interleaved in short blocks, the baseline (PyTorch eager under
inference_mode, or scikit-learn predict), a bare onnxruntime InferenceSession on the same ONNX, edgeml's
FP32 artifact and edgeml's INT8 artifact, at batch 1 and one larger batch, with threads fixed. Then the
peak RSS of a fresh process that loads and runs each, accuracy (or cosine for untrained models), GFLOP/s
against this CPU's peak, start-up costs, and the targets, met or not.

    python benchmarks/run.py            # full run: every model (about 6 minutes here)
    python benchmarks/run.py --quick    # the small models, shorter timings (under 2 minutes)

Writes benchmarks/results.json and benchmarks/RESULTS.md, and the table between the markers in README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as reference_models  # noqa: E402
from flops import count_flops, cpu_peak_gflops  # noqa: E402

import edgeml  # noqa: E402
from edgeml.latency.compare import timed_block  # noqa: E402
from edgeml.latency.stats import summarize  # noqa: E402

VARIANTS = ("baseline", "onnxruntime", "edgeml fp32", "edgeml int8")
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
#: The section of RESULTS.md that benchmarks/hf_minilm.py writes, kept when this suite rewrites the file.
HF_SECTION = "## all-MiniLM-L6-v2"


# -- timing ---------------------------------------------------------------------------------------------

#: Each block of an interleaved run lasts about this long; ``timed_block`` drops its first tenth.
#: onnxruntime's and PyTorch's worker threads keep spinning for a while after a call, so on a machine with
#: few cores the variant that runs next would pay for the previous one's threads (seen here: 2x at 20 ms).
BLOCK_S = 0.3


def interleaved(variants: dict, seconds: float, min_runs: int) -> dict[str, list[int]]:
    """Time every variant in rotating blocks until each has kept >= ``seconds`` of calls and >= ``min_runs``
    of them (capped at 4x that time): drift hits all of them alike, cross-talk between them does not."""
    clock = time.perf_counter_ns
    blocks = {}
    for name, call in variants.items():
        start = clock()
        while clock() - start < 0.2e9:  # warm-up
            call()
        start = clock()
        call()
        blocks[name] = int(min(5000, max(3, BLOCK_S * 1e9 / max(clock() - start, 1))))
    samples = {name: [] for name in variants}
    spent = dict.fromkeys(variants, 0)
    deadline = clock() + 4 * seconds * len(variants) * 1e9
    while any(spent[n] < seconds * 1e9 or len(samples[n]) < min_runs for n in variants) and clock() < deadline:
        for name, call in variants.items():
            kept = timed_block(call, blocks[name])
            samples[name] += kept
            spent[name] += sum(kept)
    return samples


# -- fresh processes --------------------------------------------------------------------------------------

CHILD = {
    "edgeml": "import edgeml; m = edgeml.load({path!r}, threads={threads}); m.run(feeds)",
    "onnxruntime": ("import onnxruntime as ort; o = ort.SessionOptions(); o.intra_op_num_threads = {threads}; "
                    "s = ort.InferenceSession({path!r}, o, providers=['CPUExecutionProvider']); s.run(None, feeds)"),
    "torch": ("import torch; torch.set_num_threads({threads}); m = torch.export.load({path!r}).module(); "
              "m(*[torch.from_numpy(v) for v in feeds.values()])"),
    "sklearn": "import joblib; m = joblib.load({path!r}); m.predict(frame(feeds))",
}
CHILD_PRELUDE = """
import sys, time
start = time.perf_counter()
import numpy as np
feeds = dict(np.load(sys.argv[1], allow_pickle=True))
def frame(feeds):
    if list(feeds) == ["X"]:
        return feeds["X"]
    import pandas as pd
    return pd.DataFrame({k: v.reshape(-1) for k, v in feeds.items()}).replace("", float("nan"))
"""
# VmHWM, not getrusage: a child's ru_maxrss starts at its parent's RSS at fork on Linux.
CHILD_EPILOGUE = """
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(time.perf_counter() - start, hwm / 1024)
"""


def fresh_process(kind: str, path: Path, feeds_file: Path, threads: int) -> dict:
    """Wall time and peak RSS of a new Python process that loads ``path`` and runs it once."""
    code = CHILD_PRELUDE + CHILD[kind].format(path=str(path), threads=threads) + CHILD_EPILOGUE
    out = subprocess.run([sys.executable, "-c", code, str(feeds_file)], capture_output=True, text=True, check=True)
    seconds, rss = out.stdout.split()[-2:]
    return {"seconds": float(seconds), "peak_rss_mb": float(rss)}


def startup(onnx_path: Path, feeds_file: Path, threads: int, repeats: int) -> dict:
    """`edgeml --help`, and import + load + one run in a fresh process, edgeml against bare onnxruntime."""
    script = Path(sys.executable).with_name("edgeml")
    help_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(script), "--help"], capture_output=True, check=True)
        help_times.append(time.perf_counter() - start)
    runs = {kind: [fresh_process(kind, onnx_path, feeds_file, threads) for _ in range(repeats)]
            for kind in ("edgeml", "onnxruntime")}
    medians = {kind: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_rss_mb")} for kind, rs in runs.items()}
    return {"help_seconds": statistics.median(help_times), "fresh_process": medians,
            "time_ratio": medians["edgeml"]["seconds"] / medians["onnxruntime"]["seconds"],
            "rss_ratio": medians["edgeml"]["peak_rss_mb"] / medians["onnxruntime"]["peak_rss_mb"]}


# -- one model ----------------------------------------------------------------------------------------------

def bench_model(ref, workdir: Path, threads: int, seconds: float, min_runs: int) -> dict:
    import joblib
    import onnxruntime as ort
    import torch

    from edgeml.calibration.int8 import Int8Options
    from edgeml.runtimes.onnxrt import session_options

    torch.set_num_threads(threads)
    result: dict = {"framework": ref.framework, "threads": threads}
    start = time.perf_counter()
    converted = edgeml.convert(ref.model, "onnx", workdir, inputs=ref.inputs, dynamic_batch=ref.framework == "torch",
                               sample=ref.sample, name=ref.name)
    result["conversion_s"] = time.perf_counter() - start
    fp32 = converted.onnx
    result["check"] = converted.artifacts[0].check.summary()
    paths = {"onnxruntime": fp32, "edgeml fp32": fp32}
    if ref.int8:
        options = Int8Options()
        if ref.int8 == "static":
            np.save(workdir / "calib.npy", ref.calib)
            options.calib = workdir / "calib.npy"
            if ref.eval is not None:
                np.save(workdir / "eval.npy", next(iter(ref.eval[0].values())))
                np.save(workdir / "labels.npy", ref.eval[1])
                options.eval_data, options.eval_labels = workdir / "eval.npy", workdir / "labels.npy"
        start = time.perf_counter()
        quantized = edgeml.convert(fp32, "onnx", workdir / "int8", int8=options, check=False)
        result["int8_s"] = time.perf_counter() - start
        paths["edgeml int8"] = quantized.artifacts[1].path
        result["int8"] = {k: v for k, v in quantized.artifacts[1].record["quantization"].items()
                          if k in ("mode", "method", "target", "recipe", "calibration_samples", "accuracy", "excluded_layers")}
    result["size_bytes"] = {name: p.stat().st_size for name, p in paths.items() if name != "onnxruntime"}

    runtimes = {name: edgeml.load(p, threads=threads) for name, p in paths.items() if name.startswith("edgeml")}
    session = ort.InferenceSession(str(fp32), session_options(threads), providers=["CPUExecutionProvider"])
    result["latency"] = {}
    for batch in ref.batches:
        feeds = ref.feeds(batch)
        variants = {"baseline": lambda f=feeds: ref.baseline(f), "onnxruntime": lambda f=feeds: session.run(None, f)}
        variants.update({name: (lambda r=rt, f=feeds: r.run(f)) for name, rt in runtimes.items()})
        samples = interleaved(variants, seconds, min_runs)
        rows = {}
        for name, values in samples.items():
            s = summarize(values, batch)
            rows[name] = {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "throughput_per_s": s["throughput_per_s"],
                          "runs": s["count"]}
        base = rows["baseline"]["p50_ms"]
        for row in rows.values():
            row["speedup_vs_baseline"] = base / row["p50_ms"]
        result["latency"][str(batch)] = rows

    result["accuracy"] = accuracy(ref, runtimes)
    feeds_file = workdir / "feeds.npz"
    np.savez(feeds_file, **ref.feeds(1))
    if ref.framework == "torch":
        torch.export.save(torch.export.export(ref.model, tuple(torch.from_numpy(v) for v in ref.feeds(2).values()),
                                              dynamic_shapes=tuple({0: torch.export.Dim("batch")} for _ in ref.feeds(1))),
                          str(workdir / "source.pt2"))
        baseline = ("torch", workdir / "source.pt2")
    else:
        joblib.dump(ref.model, workdir / "source.joblib")
        baseline = ("sklearn", workdir / "source.joblib")
    result["fresh_process"] = {"baseline": fresh_process(*baseline, feeds_file, threads),
                               "onnxruntime": fresh_process("onnxruntime", fp32, feeds_file, threads),
                               **{name: fresh_process("edgeml", p, feeds_file, threads)
                                  for name, p in paths.items() if name.startswith("edgeml")}}
    if ref.name in ("resnet18", "encoder"):
        gflop = count_flops(fp32, {k: v.shape for k, v in ref.feeds(1).items()}) / 1e9
        result["flops"] = {"gflop": gflop, **{name: {"p50_ms": result["latency"]["1"][name]["p50_ms"],
                                                     "gops_per_s": gflop / (result["latency"]["1"][name]["p50_ms"] / 1e3)}
                                              for name in paths if name != "onnxruntime"}}
    for runtime in runtimes.values():
        runtime.close()
    return result


def accuracy(ref, runtimes: dict) -> dict:
    """Top-1 accuracy of source, FP32 and INT8 on the held-out set; without one, INT8's cosine to FP32."""
    if ref.eval is None:
        return {}
    feeds, labels = ref.eval
    out = {"baseline": _labels(ref.baseline(feeds))}
    for name, runtime in runtimes.items():
        outputs = runtime.run(feeds)
        out[name] = outputs["label"] if "label" in outputs else next(iter(outputs.values())).argmax(1)
    scores = {name: float((np.asarray(pred) == labels).mean()) for name, pred in out.items()}
    scores["labels_equal_to_source"] = float((np.asarray(out["edgeml fp32"]) == np.asarray(out["baseline"])).mean())
    return scores


def _labels(result) -> np.ndarray:
    array = result.numpy() if hasattr(result, "numpy") else np.asarray(result)
    return array.argmax(1) if array.ndim == 2 else array


# -- targets and reports --------------------------------------------------------------------------------------

def targets(results: dict) -> list[dict]:
    m, rows = results["models"], []

    def add(target, value, met):
        rows.append({"target": target, "measured": value, "met": bool(met)})

    if "resnet18" in m:
        lat = m["resnet18"]["latency"]["1"]
        best = max((n for n in lat if n.startswith("edgeml")), key=lambda n: lat[n]["speedup_vs_baseline"])
        add("resnet18 batch 1: fastest edgeml artifact >= 2.5x faster p50 than PyTorch eager",
            f"{lat[best]['speedup_vs_baseline']:.2f}x ({best})", lat[best]["speedup_vs_baseline"] >= 2.5)
    if "cnn-digits" in m:
        a = m["cnn-digits"]["accuracy"]
        drop = 100 * (a["edgeml fp32"] - a["edgeml int8"])
        add("cnn-digits: INT8 top-1 accuracy drop <= 1 point", f"{drop:.2f} points", drop <= 1)
    if "encoder" in m:
        lat, cos = m["encoder"]["latency"]["1"], m["encoder"]["int8"]["accuracy"]["cosine"]
        int8_gain = lat["edgeml fp32"]["p50_ms"] / lat["edgeml int8"]["p50_ms"]
        add("encoder: INT8 >= 1.2x faster than FP32 ONNX", f"{int8_gain:.2f}x", int8_gain >= 1.2)
        add("encoder: INT8 cosine to FP32 >= 0.99", f"{cos:.5f}", cos >= 0.99)
        fp32_gain = lat["edgeml fp32"]["speedup_vs_baseline"]
        add("encoder: FP32 ONNX >= 1.5x faster than eager", f"{fp32_gain:.2f}x", fp32_gain >= 1.5)
    if "rf" in m:
        gain = m["rf"]["latency"]["1"]["edgeml fp32"]["speedup_vs_baseline"]
        a = m["rf"]["accuracy"]
        add("rf batch 1: >= 100x faster than scikit-learn predict", f"{gain:.0f}x", gain >= 100)
        add("rf: identical labels to scikit-learn on the test set", f"{a['labels_equal_to_source']:.2%} equal",
            a["labels_equal_to_source"] == 1.0)
    o = results["overhead"]
    add("runtime wrapper overhead <= 5 us per call over bare onnxruntime", f"{o['worst_us']:.2f} us", o["worst_us"] <= 5)
    s = results["startup"]
    add("fresh process load-and-run within 1.2x of bare onnxruntime (time)", f"{s['time_ratio']:.2f}x", s["time_ratio"] <= 1.2)
    add("fresh process load-and-run within 1.2x of bare onnxruntime (peak RSS)", f"{s['rss_ratio']:.2f}x", s["rss_ratio"] <= 1.2)
    add("`edgeml --help` under 0.5 s", f"{s['help_seconds']:.3f} s", s["help_seconds"] < 0.5)
    return rows


def latency_table(results: dict, batch_1_only: bool = False) -> list[str]:
    lines = ["| model | batch | variant | p50 ms | p99 ms | samples/s | vs baseline |", "|---|---:|---|---:|---:|---:|---:|"]
    for name, r in results["models"].items():
        for batch, rows in r["latency"].items():
            if batch_1_only and batch != "1":
                continue
            for variant in VARIANTS:
                if variant in rows:
                    v = rows[variant]
                    label = {"baseline": "PyTorch eager" if r["framework"] == "torch" else "scikit-learn predict"}.get(variant, variant)
                    lines.append(f"| {name} | {batch} | {label} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | "
                                 f"{v['throughput_per_s']:,.0f} | {v['speedup_vs_baseline']:.1f}x |")
    return lines


def markdown(results: dict) -> str:
    env, peak = results["machine"], results["peak"]
    lines = [
        "# edgeml performance suite", "",
        f"Measured {results['date']} on {env['cpu']} ({env['cores']} cores, {', '.join(env['isa'])}), "
        f"{results['threads']} threads for every runtime; edgeml {env['edgeml']}, {results['versions']}. "
        f"Mode: {results['mode']}. Reproduce: `python benchmarks/run.py` (full) or `python benchmarks/run.py --quick`.", "",
        "## Targets", "", "| target | measured | met |", "|---|---|---|",
        *[f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" for t in results["targets"]],
        "", "## Latency", "", "Interleaved in one process; the baseline is what users run today.", "",
        *latency_table(results), "",
        "## Models", "",
        "| model | FP32 size | INT8 size | accuracy: source / FP32 / INT8 | INT8 vs FP32 | conversion s | INT8 s | fresh-process peak RSS MB: baseline / onnxruntime / edgeml / edgeml INT8 |",
        "|---|---:|---:|---|---|---:|---:|---|",
    ]
    for name, r in results["models"].items():
        size = r["size_bytes"]
        acc = r["accuracy"]
        acc_text = " / ".join(f"{acc[k]:.2%}" for k in ("baseline", "edgeml fp32", "edgeml int8") if k in acc) or "untrained"
        int8 = r.get("int8", {}).get("accuracy", {})
        int8_text = f"cosine {int8['cosine']:.4f}" if int8.get("cosine") is not None else "-"
        rss = r["fresh_process"]
        rss_text = " / ".join(f"{rss[k]['peak_rss_mb']:.0f}" for k in ("baseline", "onnxruntime", "edgeml fp32", "edgeml int8") if k in rss)
        lines.append(f"| {name} | {size['edgeml fp32'] / 1024:,.0f} KiB | "
                     f"{(str(round(size['edgeml int8'] / 1024)) + ' KiB') if 'edgeml int8' in size else '-'} | {acc_text} | "
                     f"{int8_text} | {r['conversion_s']:.1f} | {r.get('int8_s', 0):.1f} | {rss_text} |")
    flops = [(n, r["flops"]) for n, r in results["models"].items() if "flops" in r]
    if flops:
        lines += ["", "## Distance to the limit", "",
                  f"FP32 peak = {peak['cores']} cores x {peak['fp32_lanes']} fp32 lanes x 2 (FMA) x {peak['fma_units']} FMA "
                  f"units (assumed) x {peak['ghz']:.2f} GHz = {peak['peak_gflops']:.0f} GFLOP/s; INT8 peak = {peak['int8_factor']}x "
                  f"that = {peak['peak_int8_gops']:.0f} GOP/s (VNNI: 4 multiply-adds per 32-bit lane; assumed). Operations "
                  "counted from the ONNX graph (Conv, Gemm, MatMul: 2 per multiply-add), batch 1.", "",
                  "| model | artifact | G(FL)OP per inference | p50 ms | achieved G(FL)OP/s | fraction of its peak |",
                  "|---|---|---:|---:|---:|---:|"]
        for n, f in flops:
            for artifact in ("edgeml fp32", "edgeml int8"):
                if artifact in f:
                    limit = peak["peak_int8_gops"] if artifact.endswith("int8") else peak["peak_gflops"]
                    a = f[artifact]
                    lines.append(f"| {n} | {artifact} | {f['gflop']:.2f} | {a['p50_ms']:.2f} | {a['gops_per_s']:.1f} | "
                                 f"{a['gops_per_s'] / limit:.1%} |")
    s = results["startup"]
    fp = s["fresh_process"]
    lines += ["", "## Start-up", "",
              f"- `edgeml --help`: {s['help_seconds']:.3f} s (median of {results['repeats']}).",
              f"- Fresh process, import + load + one run of the {s['model']} ONNX: edgeml {fp['edgeml']['seconds']:.3f} s, "
              f"{fp['edgeml']['peak_rss_mb']:.0f} MB; bare onnxruntime {fp['onnxruntime']['seconds']:.3f} s, "
              f"{fp['onnxruntime']['peak_rss_mb']:.0f} MB ({s['time_ratio']:.2f}x time, {s['rss_ratio']:.2f}x RSS).",
              f"- Runtime wrapper per call over bare `InferenceSession.run`: {results['overhead']['worst_us']:.2f} us.", ""]
    return "\n".join(lines)


def readme_block(results: dict) -> str:
    met = sum(t["met"] for t in results["targets"])
    lines = [f"Measured {results['date']} ({results['mode']} run) on {results['machine']['cpu']}, "
             f"{results['machine']['cores']} cores, {results['threads']} threads; {met} of {len(results['targets'])} "
             "targets met. Full tables, RSS, accuracy and start-up: [benchmarks/RESULTS.md](benchmarks/RESULTS.md).", "",
             *latency_table(results, batch_1_only=True), "",
             "| target | measured | met |", "|---|---|---|",
             *[f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" for t in results["targets"]]]
    return "\n".join(lines)


def update_readme(path: Path, block: str) -> None:
    text = path.read_text()
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        path.write_text(f"{head}{README_START}\n{block}\n{README_END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small models, shorter timings")
    parser.add_argument("--models", help="comma-separated subset of: " + ", ".join(reference_models.ALL))
    parser.add_argument("--out", type=Path, default=HERE, help="folder for results.json and RESULTS.md")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else list(reference_models.QUICK if args.quick else reference_models.ALL)
    unknown = [n for n in names if n not in reference_models.ALL]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}")
    seconds, min_runs, repeats = (0.3, 20, 1) if args.quick else (2.0, 100, 5)  # quick: a smoke run
    started = time.perf_counter()
    from importlib import metadata

    from edgeml.environment import fingerprint

    results = {"date": dt.date.today().isoformat(), "mode": "quick" if args.quick else "full", "threads": args.threads,
               "repeats": repeats, "machine": fingerprint(threads=args.threads), "peak": cpu_peak_gflops(),
               "versions": ", ".join(f"{p} {metadata.version(p)}" for p in ("onnxruntime", "torch", "scikit-learn")),
               "models": {}}
    with tempfile.TemporaryDirectory(prefix="edgeml-suite-") as folder:
        for name in names:
            print(f"[{time.perf_counter() - started:5.0f} s] {name}: building, converting, timing...", flush=True)
            ref = reference_models.ALL[name]()
            workdir = Path(folder) / name
            results["models"][name] = bench_model(ref, workdir, args.threads, seconds, min_runs)
        first = Path(folder) / names[0]
        print(f"[{time.perf_counter() - started:5.0f} s] start-up and wrapper overhead...", flush=True)
        results["startup"] = {"model": names[0],
                              **startup(first / f"{names[0]}.onnx", first / "feeds.npz", args.threads, repeats)}
    from runtime_overhead import measure

    overhead = measure(blocks=50 if args.quick else 200, calls=200)
    results["overhead"] = {**overhead, "worst_us": max(overhead["overhead_us"].values())}
    results["targets"] = targets(results)
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    report = args.out / "RESULTS.md"
    previous = report.read_text() if report.exists() else ""
    kept = previous[previous.index(HF_SECTION):] if HF_SECTION in previous else ""  # hf_minilm.py's section
    report.write_text(markdown(results) + (f"\n{kept}" if kept else ""))
    if not args.no_readme:
        update_readme(HERE.parent / "README.md", readme_block(results))
    print(markdown(results))
    print(f"done in {results['seconds']:.0f} s; wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
