"""``edgeml demo``: the whole job on built-in examples, no files needed.

Trains a PyTorch MLP and a RandomForest on scikit-learn's bundled digits, converts both to ONNX, checks
them against their sources on the held-out digits, and benches them against a latency budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .errors import require


def digits_split(seed: int = 0):
    """scikit-learn's 8x8 digits, scaled to [0, 1] as float32, split 75/25 with a fixed seed."""
    require("sklearn", "sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)


def make_mlp(n_in: int = 64, n_classes: int = 10, hidden: int = 128):
    """The classifier as ML engineers write it: Linear, BatchNorm, ReLU, Dropout."""
    nn = require("torch.nn", "torch")
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(hidden, hidden // 2), nn.BatchNorm1d(hidden // 2), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(hidden // 2, n_classes),
    )


def train_mlp(X: np.ndarray, y: np.ndarray, epochs: int = 40, seed: int = 0):
    torch = require("torch", "torch")
    torch.manual_seed(seed)
    model = make_mlp(X.shape[1], int(y.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), generator=generator).split(64):
            optimizer.zero_grad()
            loss_fn(model(Xt[idx]), yt[idx]).backward()
            optimizer.step()
    return model.eval()


def run_demo(output_dir: str | Path = "edgeml-demo", budget_ms: float = 100.0,
             progress: Callable[[str], None] | None = None) -> list[dict]:
    """Train, convert, check and bench both examples; one row of results per model."""
    require("torch", "torch")
    require("sklearn", "sklearn")
    from sklearn.ensemble import RandomForestClassifier

    from .latency.runner import Method, bench
    from .pipeline import convert
    from .runtimes import load

    say = progress or (lambda message: None)
    X_train, X_test, y_train, y_test = digits_split()
    say(f"digits: {len(X_train)} training and {len(X_test)} test images (8x8)")
    say("training a PyTorch MLP (Linear/BatchNorm/ReLU/Dropout)...")
    mlp = train_mlp(X_train, y_train)
    say("training a RandomForest (100 trees)...")
    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(X_train, y_train)

    torch = require("torch", "torch")
    with torch.inference_mode():
        mlp_source_labels = mlp(torch.from_numpy(X_test)).argmax(1).numpy()
    rows = []
    for label, model, options, source_labels in (
        ("PyTorch MLP", mlp, {"inputs": ["x:1x64"], "dynamic_batch": True}, mlp_source_labels),
        ("RandomForest", forest, {}, forest.predict(X_test)),
    ):
        name = "digits_mlp" if model is mlp else "digits_rf"
        say(f"{label}: converting to ONNX...")
        input_name = "x" if model is mlp else "X"
        result = convert(model, "onnx", output_dir, name=name, data={input_name: X_test}, progress=say, **options)
        artifact = result.artifacts[0]
        with load(artifact.path) as runtime:
            outputs = runtime.run({input_name: X_test})
        onnx_labels = outputs["label"] if "label" in outputs else next(iter(outputs.values())).argmax(1)
        say(f"{label}: benchmarking against {budget_ms:g} ms...")
        timing = bench(artifact.path, budget_ms=budget_ms, method=Method(min_seconds=1.0))
        rows.append({
            "model": label,
            "artifact": str(artifact.path),
            "size_kb": artifact.path.stat().st_size / 1024,
            "check": artifact.check.summary(),
            "check_passed": artifact.check.passed,
            "source_accuracy": float((source_labels == y_test).mean()),
            "onnx_accuracy": float((onnx_labels == y_test).mean()),
            "p50_ms": timing.stats["p50_ms"],
            "p99_ms": timing.stats["p99_ms"],
            "budget_ms": budget_ms,
            "within_budget": bool(timing.passed),
        })
    return rows
