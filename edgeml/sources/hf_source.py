"""Hugging Face folders (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``) as a torch source.

The folder is loaded with transformers, offline only, into a module whose inputs are the ones the model's
``forward`` takes and its tokenizer produces (``input_ids``, ``attention_mask``, ``token_type_ids``) and whose
outputs are named by what they hold (``last_hidden_state``, ``logits``, ``sentence_embedding``). A
sentence-transformers folder (``modules.json``) gets its Pooling and Normalize modules inside the graph,
computed here in plain torch (sentence-transformers is not needed). What the artifact must carry (task,
labels, input roles, vocabularies, the tokenizer) travels as the SourceModel's ``meta``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import InputError, UnsafeFormatError, first_line, require
from ..files import sha256
from ..model_meta import TASKS, ModelMeta
from ..quiet import quiet
from ..spec import TensorSpec
from .base import SourceModel

CONFIG = "config.json"
#: Weight files in order of preference: safetensors needs no pickle at all.
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER = "tokenizer.json"
#: Task -> (transformers Auto class, output name).
HF_TASKS = {
    "feature-extraction": ("AutoModel", "last_hidden_state"),
    "text-classification": ("AutoModelForSequenceClassification", "logits"),
    "token-classification": ("AutoModelForTokenClassification", "logits"),
    "regression": ("AutoModelForSequenceClassification", "logits"),  # a sequence head with one output, no labels
}
#: Inputs a tokenizer produces, in the order the artifact takes them, with their roles.
TEXT_INPUTS = {"input_ids": "token_ids", "attention_mask": "attention_mask", "token_type_ids": "token_type_ids"}
#: sentence-transformers pooling modes edgeml computes, in the order sentence-transformers concatenates them.
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")
_ST = "sentence_transformers.models."


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def load_hf_folder(folder: Path, task: str | None = None, trust_remote_code: bool = False) -> SourceModel:
    """A SourceModel for a Hugging Face folder; every refusal names the file and the fix."""
    config_dict = _read_json(folder / CONFIG)
    if not isinstance(config_dict, dict):
        raise InputError(f"{folder / CONFIG} is not a Hugging Face config (not a JSON object); save the model again "
                         "with save_pretrained")
    weights = next((folder / name for name in WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise InputError(f"{folder} has {CONFIG} but no weights ({', '.join(WEIGHTS[::2])}); save the model with "
                         "save_pretrained(folder) to write them")
    if "auto_map" in config_dict and not trust_remote_code:
        raise UnsafeFormatError(f"{folder / CONFIG} asks for the model's own Python code (auto_map), which runs on "
                                "load; pass --trust-remote-code (trust_remote_code=True) only if you trust its author")
    transformers = require("transformers", "hf")
    torch = require("torch", "hf")
    try:
        with quiet():
            config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                             trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - an unknown model_type, a broken config
        raise InputError(f"transformers {transformers.__version__} cannot read {folder / CONFIG} ({first_line(exc)}); "
                         "use a model type it supports, or upgrade transformers") from exc
    architecture = (getattr(config, "architectures", None) or ["?"])[0]
    tokenizer = folder / TOKENIZER
    if tokenizer.is_file() and isinstance(getattr(config, "vocab_size", None), int):
        _check_tokenizer(tokenizer, config)
    fix = "pick another --task" if task else "give --task"
    task = task or _task_of(architecture, folder)
    if task == "text-classification" and (getattr(config, "problem_type", None) == "regression"
                                          or getattr(config, "num_labels", 2) == 1):
        task = "regression"  # one score per text: no labels to judge or to name
    if task not in HF_TASKS:
        usable = [t for t in TASKS if t in HF_TASKS]
        raise InputError(f"task {task!r} does not apply to {folder} (a {architecture}); use one of: {', '.join(usable)}")
    auto, output = HF_TASKS[task]
    try:
        with quiet(), torch.device("cpu"):
            model, info = getattr(transformers, auto).from_pretrained(
                str(folder), config=config, local_files_only=True, trust_remote_code=trust_remote_code,
                use_safetensors=weights.name.startswith("model.safetensors"), output_loading_info=True,
                weights_only=True)
    except Exception as exc:  # noqa: BLE001 - no class for this config and task, damaged weights
        raise InputError(f"transformers cannot load {folder} ({architecture}) for {task} ({first_line(exc)}); "
                         f"{fix}, or check {weights.name}") from exc
    # A feature extractor's output is the last hidden state: an untrained pooler does not touch it.
    missing = sorted(k for k in info.get("missing_keys", ()) if not (task == "feature-extraction" and k.startswith("pooler.")))
    if missing:
        raise InputError(f"{weights} has no weights for {len(missing)} parameter(s) of a {type(model).__name__} "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): the folder holds a "
                         f"{architecture}, not a {task} model; drop --task or pick one the folder was trained for")
    model.eval()
    names = _input_names(model, config)
    notes = []
    pooling, normalize = _sentence_modules(folder, notes) if task == "feature-extraction" else (None, False)
    module = _text_model_class()(model, names, output, pooling, normalize)
    meta = _meta(folder, config, task, names)
    if not tokenizer.is_file():
        tokenizer = None
        notes.append(f"{folder} has no {TOKENIZER}: the artifact has no tokenizer (encode() needs one)")
    specs = [TensorSpec(name, ("batch", "sequence"), "int64") for name in names]
    what = f"Hugging Face {architecture} ({weights.name}, {task})"
    return SourceModel("torch", module, specs, what, path=str(folder), sha256=sha256(weights), notes=notes, meta=meta,
                       tokenizer=str(tokenizer) if tokenizer else None)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(f"cannot read {path} as JSON ({first_line(exc)}); save the model again with save_pretrained") from exc


def _task_of(architecture: str, folder: Path) -> str:
    for suffix, task in (("ForSequenceClassification", "text-classification"),
                         ("ForTokenClassification", "token-classification"), ("Model", "feature-extraction")):
        if architecture.endswith(suffix) and (suffix != "Model" or "For" not in architecture):
            return task
    raise InputError(f"{folder / CONFIG} names architecture {architecture!r}, whose task edgeml does not infer; "
                     f"give --task ({', '.join(HF_TASKS)}), e.g. --task feature-extraction for its encoder")


def _input_names(model, config) -> list[str]:
    """The text inputs the model's forward takes; token type ids only where the model has more than one type
    (RoBERTa-like models take them but their tokenizers do not produce them)."""
    import inspect

    takes = inspect.signature(model.forward).parameters
    names = [n for n in TEXT_INPUTS if n in takes]
    if "token_type_ids" in names and getattr(config, "type_vocab_size", 0) < 2:
        names.remove("token_type_ids")
    if "input_ids" not in names:
        raise InputError(f"{type(model).__name__}.forward takes no input_ids; edgeml exports text models only")
    return names


def _meta(folder: Path, config, task: str, names: list[str]) -> ModelMeta:
    longest = getattr(config, "max_position_embeddings", None)
    tokenizer_max = _read_optional(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer_max, int) and longest and 0 < tokenizer_max < longest:
        longest = tokenizer_max  # RoBERTa-like: 514 positions, 512 tokens
    max_length = _read_optional(folder / "sentence_bert_config.json").get("max_seq_length")
    if not isinstance(max_length, int) or longest and max_length > longest:
        max_length = longest
    sizes = {"input_ids": getattr(config, "vocab_size", None), "token_type_ids": getattr(config, "type_vocab_size", None)}
    vocab = {name: size for name, size in sizes.items() if name in names and isinstance(size, int)}
    labels = None
    if task in ("text-classification", "token-classification"):
        labels = [str(config.id2label[i]) for i in sorted(config.id2label)]
    return ModelMeta(task=task, labels=labels, max_length=max_length, roles={n: TEXT_INPUTS[n] for n in names},
                     vocab=vocab, dim_max={"sequence": longest} if longest else {})


def _read_optional(path: Path) -> dict:
    value = _read_json(path) if path.is_file() else {}
    return value if isinstance(value, dict) else {}


def _sentence_modules(folder: Path, notes: list[str]) -> tuple[list[str] | None, bool]:
    """The pooling modes and whether to normalize, from a sentence-transformers folder's modules.json."""
    if not (folder / "modules.json").is_file():
        return None, False
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise InputError(f"{folder / 'modules.json'} is not a sentence-transformers module list; save the model again")
    types = [str(m.get("type", "")).removeprefix(_ST) for m in modules]
    other = [t for t in types if t not in ("Transformer", "Pooling", "Normalize")]
    pooling_module = next((m for m, t in zip(modules, types) if t == "Pooling"), None)
    if other or pooling_module is None:
        reason = f"its modules.json lists {', '.join(other)}" if other else "its modules.json lists no Pooling"
        notes.append(f"no sentence_embedding output: {reason}; edgeml puts only Pooling and Normalize in the graph")
        return None, False
    path = folder / str(pooling_module.get("path", "")) / CONFIG
    config = _read_optional(path)
    modes = [m for m in POOLING_MODES if config.get(f"pooling_mode_{m}")]
    unknown = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k[13:] not in POOLING_MODES]
    if unknown or not modes:
        notes.append(f"no sentence_embedding output: {path} asks for pooling {', '.join(unknown) or '(none)'}, and "
                     f"edgeml computes {', '.join(POOLING_MODES)}")
        return None, False
    return modes, "Normalize" in types


@functools.cache
def _text_model_class():
    """The module class, made on first use: importing this module must not import torch."""
    import torch

    class TextModel(torch.nn.Module):
        """A transformers model with named inputs and outputs, plus sentence-transformers pooling if asked."""

        def __init__(self, model, names, output, pooling=None, normalize=False):
            super().__init__()
            self.model, self.names, self.output = model, list(names), output
            self.pooling, self.normalize = pooling, normalize

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            given = dict(zip(self.names, (input_ids, attention_mask, token_type_ids)))
            hidden = getattr(self.model(**given, return_dict=True), self.output)
            if not self.pooling:
                return {self.output: hidden}
            return {self.output: hidden, "sentence_embedding": pool(hidden, given.get("attention_mask"),
                                                                     self.pooling, self.normalize)}

    return TextModel


def pool(hidden, mask, modes: list[str], normalize: bool):
    """sentence-transformers' Pooling (and Normalize) over ``hidden`` (batch × sequence × features)."""
    import torch

    mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype) if mask is None else mask.to(hidden.dtype)
    weights = mask.unsqueeze(-1)
    parts = []
    for mode in modes:
        if mode == "cls_token":
            parts.append(hidden[:, 0])
        elif mode == "max_tokens":
            parts.append(torch.where(weights > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values)
        else:
            total = (hidden * weights).sum(dim=1)
            count = weights.sum(dim=1).clamp(min=1e-9)
            parts.append(total / (count if mode == "mean_tokens" else torch.sqrt(count)))
    embedding = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    return torch.nn.functional.normalize(embedding, p=2, dim=1) if normalize else embedding


def _check_tokenizer(path: Path, config) -> None:
    """A tokenizer whose ids run past the embedding table would index outside it on device: refuse it."""
    tokenizers = require("tokenizers", "hf")
    try:
        size = tokenizers.Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception as exc:  # noqa: BLE001 - a malformed tokenizer.json
        raise InputError(f"{path} is not a tokenizers file ({first_line(exc)}); save the tokenizer again with "
                         "save_pretrained") from exc
    if size > config.vocab_size:
        raise InputError(f"{path} has {size} tokens but the model's embedding table (vocab_size in "
                         f"{path.parent / CONFIG}) has {config.vocab_size}: it is another model's tokenizer; put the "
                         "model's own tokenizer.json in the folder")
