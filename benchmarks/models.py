"""The reference models of the performance suite, built and trained here (no downloads).

Each ``Reference`` carries the source model, how users run it today (``baseline``), inputs for a batch,
evaluation data where there is a real task, and how edgeml quantizes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class Reference:
    name: str
    framework: str  # "torch" or "sklearn"
    model: Any
    inputs: list[str] | None  # edgeml input specs (torch); scikit-learn models describe their own
    batches: tuple[int, int]  # batch 1 and one larger batch
    feeds: Callable[[int], dict]  # ONNX inputs for a batch (real rows where there are some)
    baseline: Callable[[dict], Any]  # what users run today, on the same inputs
    int8: str | None = None  # "static", "dynamic" or None
    calib: np.ndarray | None = None
    eval: tuple[dict, np.ndarray] | None = None  # (feeds, labels) of a held-out test set
    sample: Any = None  # scikit-learn: rows giving the columns
    notes: list[str] = field(default_factory=list)


def _torch_baseline(model):
    import torch

    def run(feeds: dict):
        with torch.inference_mode():
            return model(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))
    return run


def _train(model, X, y, epochs, lr=1e-2, seed=0):
    import torch

    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    X, y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        for idx in torch.randperm(len(X)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def _rows(X: np.ndarray, name: str):
    def feeds(batch: int) -> dict:
        return {name: np.ascontiguousarray(X[:batch])}
    return feeds


def _cancer():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True)
    return train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)


def mlp() -> Reference:
    """Linear/BatchNorm/ReLU/Dropout classifier on raw breast-cancer features (standardization inside)."""
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("std", torch.from_numpy(std))
            self.net = nn.Sequential(nn.Linear(30, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.2),
                                     nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 2))

        def forward(self, x):
            return self.net((x - self.mean) / self.std)

    X_train, X_test, y_train, y_test = _cancer()
    model = _train(MLP(X_train.mean(0), X_train.std(0) + 1e-6), X_train, y_train, epochs=60)
    return Reference("mlp", "torch", model, ["x:1x30"], (1, 64), _rows(X_test, "x"), _torch_baseline(model),
                     int8="static", calib=X_train, eval=({"x": X_test}, y_test))


def cnn_digits() -> Reference:
    """A small CNN (Conv/BatchNorm/ReLU/pooling) trained on scikit-learn's 8x8 digits."""
    from torch import nn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10),
    )
    model = _train(model, X_train, y_train, epochs=12)
    return Reference("cnn-digits", "torch", model, ["x:1x1x8x8"], (1, 64), _rows(X_test, "x"), _torch_baseline(model),
                     int8="static", calib=X_train, eval=({"x": X_test}, y_test))


def resnet18_module():
    """torchvision's ResNet-18 layout (BasicBlocks 2-2-2-2), written out: torchvision is not installable here."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.down(x))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    torch.manual_seed(0)
    return nn.Sequential(*layers).eval()


def resnet18() -> Reference:
    """ResNet-18 shape, random weights, 1x3x224x224: realistic vision latency (cosine to FP32, no accuracy)."""
    model = resnet18_module()
    images = np.random.default_rng(0).standard_normal((72, 3, 224, 224)).astype(np.float32)
    return Reference("resnet18", "torch", model, ["input:1x3x224x224"], (1, 8), _rows(images[64:], "input"),
                     _torch_baseline(model), int8="static", calib=images[:64])


def encoder() -> Reference:
    """BERT-mini shape: 4 layers, hidden 256, 4 heads, sequence 128, random weights, pooled to 2 logits."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self, vocab=8000, dim=256):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.position = nn.Parameter(torch.randn(1, 128, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=4 * dim, dropout=0.1, batch_first=True,
                                               activation="gelu")
            self.encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
            self.head = nn.Linear(dim, 2)

        def forward(self, ids):
            return self.head(self.encoder(self.embed(ids) + self.position).mean(dim=1))

    torch.manual_seed(0)
    model = Encoder().eval()
    ids = np.random.default_rng(0).integers(0, 8000, size=(16, 128)).astype(np.int64)
    return Reference("encoder", "torch", model, ["ids:1x128:int64"], (1, 8), _rows(ids, "ids"),
                     _torch_baseline(model), int8="dynamic")


def _sklearn_baseline(model, frame: bool = False):
    def run(feeds: dict):
        if frame:
            import pandas as pd

            return model.predict(pd.DataFrame({k: v.reshape(-1) for k, v in feeds.items()}).replace("", np.nan))
        return model.predict(feeds["X"])
    return run


def rf() -> Reference:
    from sklearn.ensemble import RandomForestClassifier

    X_train, X_test, y_train, y_test = _cancer()
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X_train, y_train)
    return Reference("rf", "sklearn", model, None, (1, 64), _rows(X_test, "X"), _sklearn_baseline(model),
                     eval=({"X": X_test}, y_test))


def logreg() -> Reference:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = _cancer()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_train, y_train)
    return Reference("logreg", "sklearn", model, None, (1, 64), _rows(X_test, "X"), _sklearn_baseline(model),
                     eval=({"X": X_test}, y_test))


def pipeline() -> Reference:
    """Numeric + text DataFrame columns -> imputers, scaler, one-hot encoder -> RandomForest (wine data)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    data = load_wine(as_frame=True)
    frame = data.frame[["alcohol", "malic_acid", "color_intensity", "proline", "hue"]].astype(np.float32)
    rng = np.random.default_rng(0)
    frame["region"] = np.where(data.target == 0, "north", np.where(rng.random(len(frame)) < 0.5, "south", "east"))
    frame["cask"] = rng.choice(["oak", "steel"], len(frame))
    frame.loc[::9, "alcohol"] = np.nan
    frame.loc[::11, "region"] = np.nan
    train, test, y_train, y_test = train_test_split(frame, data.target.to_numpy(), test_size=0.3, random_state=0,
                                                    stratify=data.target)
    numeric, text = ["alcohol", "malic_acid", "color_intensity", "proline", "hue"], ["region", "cask"]
    pre = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          ("onehot", OneHotEncoder(handle_unknown="ignore"))]), text),
    ])
    model = Pipeline([("pre", pre), ("forest", RandomForestClassifier(n_estimators=100, random_state=0))])
    model.fit(train, y_train)

    def feeds_of(rows) -> dict:
        out = {}
        for column in rows.columns:
            values = rows[column]
            out[column] = (values.astype(object).where(values.notna(), "").astype(str).to_numpy(dtype=object)
                           if values.dtype == object or column in text else values.to_numpy(np.float32)).reshape(-1, 1)
        return out

    test_feeds = feeds_of(test)
    return Reference("pipeline", "sklearn", model, None, (1, 32), lambda b: {k: v[:b] for k, v in test_feeds.items()},
                     _sklearn_baseline(model, frame=True), eval=(test_feeds, y_test), sample=train)


ALL = {"mlp": mlp, "cnn-digits": cnn_digits, "resnet18": resnet18, "encoder": encoder, "rf": rf, "logreg": logreg,
       "pipeline": pipeline}
QUICK = ("mlp", "cnn-digits", "logreg", "rf")
