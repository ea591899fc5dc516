"""The manifest never lies, measured with real processes: concurrent converts and SIGKILLs.

(a) ``--rounds`` rounds of two ``edgeml convert`` processes started at the same moment into one fresh
    folder (two CNNs, two names): counts rounds whose manifest lost an entry (target 0 of 30).
(b) ``--kills`` SIGKILLs at uniformly random moments of ``edgeml convert --int8 --calib calib.npz`` (a small
    CNN trained on scikit-learn's digits) into a folder that already holds a previous build of the same
    names: counts manifests that list a missing file or a wrong sha256 (target 0 of 20), the temporary
    files a kill left in the output folder, and those still there after the next convert into that
    folder (target 0). It also counts what the kill left in the process's private TMPDIR (the INT8
    step's work folder), and the problems ``edgeml.verify`` reports after the kill (an unlisted file is
    the honest state of a build killed between its rename and its listing).

    python benchmarks/manifest_integrity.py [--rounds 30] [--kills 20] [--source onnx|pt2] [--json out.json]

About 10 minutes on a quiet 2-core machine with the defaults (ONNX sources).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def build_inputs(folder: Path, source: str) -> dict:
    """Two small CNNs trained on digits (seeds 0 and 1) as ``source`` files, and a calibration .npz."""
    import torch
    from torch import nn

    import edgeml
    from edgeml.demo import digits_split

    X_train, _, y_train, _ = digits_split()
    X = torch.from_numpy(X_train.reshape(-1, 1, 8, 8))
    y = torch.from_numpy(y_train.astype(np.int64))
    np.savez(folder / "calib.npz", input=X_train.reshape(-1, 1, 8, 8))  # nn.Sequential names its input "input"
    models = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten(), nn.Linear(16, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(8):
            for idx in torch.randperm(len(X)).split(64):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
                optimizer.step()
        model.eval()
        batch = torch.export.Dim("batch")
        program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
        path = folder / f"cnn{seed}.pt2"
        torch.export.save(program, str(path))
        if source == "onnx":
            path = edgeml.convert(path, "onnx", folder / f"cnn{seed}", name=f"cnn{seed}").onnx
        models[seed] = path
    return {"models": models, "calib": folder / "calib.npz"}


def edgeml_command(*args) -> list[str]:
    return [sys.executable, "-m", "edgeml.cli", "convert", *map(str, args)]


def must_succeed(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")


def lies(folder: Path) -> list[str]:
    """What the manifest lists that is not so: a missing file, or one with another sha256."""
    from edgeml.files import sha256

    path = folder / "edgeml.json"
    if not path.exists():
        return []
    found = []
    for entry in json.loads(path.read_text())["artifacts"]:
        artifact = folder / entry["file"]
        if not artifact.is_file():
            found.append(f"{entry['file']}: listed, missing")
        elif sha256(artifact) != entry["sha256"]:
            found.append(f"{entry['file']}: listed with a wrong sha256")
    return found


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name == ".edgeml.lock")


_KINDS = {"but missing": "listed file missing", "sha256 differs": "wrong sha256", "not in edgeml.json": "unlisted ONNX file",
          "which is gone": "stale temporary", "leftover temporary": "stale temporary"}


def problem_kind(problem: str) -> str:
    return next((kind for words, kind in _KINDS.items() if words in problem), problem)


def concurrent_rounds(inputs: dict, rounds: int, work: Path) -> dict:
    lost, failed = 0, 0
    for i in range(rounds):
        folder = work / f"concurrent{i}"
        processes = [subprocess.Popen(edgeml_command(inputs["models"][seed], "-o", folder, "--name", f"model{seed}"),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
        codes = [p.wait() for p in processes]
        failed += any(codes)
        if any(codes):
            print(f"  round {i}: exit codes {codes}: {[p.stderr.read().strip()[-300:] for p in processes]}", file=sys.stderr)
        names = {e["file"] for e in json.loads((folder / "edgeml.json").read_text())["artifacts"]} \
            if (folder / "edgeml.json").exists() else set()
        lost += names != {"model0.onnx", "model1.onnx"}
        shutil.rmtree(folder)
    return {"rounds": rounds, "rounds_losing_an_entry": lost, "rounds_with_a_failed_convert": failed}


def kill_rounds(inputs: dict, kills: int, work: Path, seed: int) -> dict:
    from edgeml.verification import verify

    base = work / "previous"
    # The gate is not what is measured here: a loose one, so that every uninterrupted run writes INT8.
    int8 = ("--int8", "--calib", inputs["calib"], "--max-accuracy-drop", 10, "--name", "cnn")
    must_succeed(edgeml_command(inputs["models"][0], "-o", base, *int8))
    timed = work / "timed"
    shutil.copytree(base, timed)
    start = time.perf_counter()
    must_succeed(edgeml_command(inputs["models"][1], "-o", timed, *int8))
    duration = time.perf_counter() - start
    rng = random.Random(seed)
    counts = Counter()
    problems: Counter = Counter()
    for i in range(kills):
        folder, private_tmp = work / f"kill{i}", work / f"tmp{i}"
        shutil.copytree(base, folder)
        private_tmp.mkdir()
        process = subprocess.Popen(edgeml_command(inputs["models"][1], "-o", folder, *int8),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "TMPDIR": str(private_tmp)})
        moment = rng.uniform(0, duration)
        try:
            process.wait(timeout=moment)
            counts["finished_before_the_kill"] += 1
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        found = lies(folder)
        counts["manifests_that_lie"] += bool(found)
        for lie in found:
            print(f"  kill {i} at {moment:.2f} s: {lie}", file=sys.stderr)
        counts["temporaries_after_the_kill"] += len(temporaries(folder))
        counts["private_tmpdir_leftovers"] += len(list(private_tmp.iterdir()))
        problems.update(map(problem_kind, verify(folder).problems))
        nxt = subprocess.run(edgeml_command(base / "cnn.onnx", "-o", folder, "--name", "next"), capture_output=True,
                             text=True)
        if nxt.returncode:
            counts["next_convert_failed"] += 1
            print(f"  kill {i}: the next convert failed: {nxt.stderr.strip()[-300:]}", file=sys.stderr)
        counts["temporaries_after_the_next_convert"] += len(temporaries(folder))
        counts["manifests_that_lie_after_the_next_convert"] += bool(lies(folder))
        shutil.rmtree(folder)
        shutil.rmtree(private_tmp)
    return {"kills": kills, "full_run_seconds": round(duration, 2), **counts,
            "verify_problems_after_the_kill": dict(problems)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="rounds of two simultaneous converts")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLed INT8 converts")
    parser.add_argument("--source", choices=["onnx", "pt2"], default="onnx",
                        help="the models' file format (pt2 adds torch.export to each run: slower, fewer kills land "
                             "where files are written)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--json", help="also write the counts here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeml-manifest-") as folder:
        work = Path(folder)
        inputs = build_inputs(work, args.source)
        results = {"source": args.source}
        if args.rounds:
            results["concurrent"] = concurrent_rounds(inputs, args.rounds, work)
            print(json.dumps(results["concurrent"]))
        if args.kills:
            results["kills"] = kill_rounds(inputs, args.kills, work, args.seed)
            print(json.dumps(results["kills"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    concurrent, killed = results.get("concurrent", {}), results.get("kills", {})
    bad = (concurrent.get("rounds_losing_an_entry", 0) + killed.get("manifests_that_lie", 0)
           + killed.get("temporaries_after_the_next_convert", 0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
