"""Text in, model inputs out: the artifact's own tokenizer, run by the Hugging Face ``tokenizers`` library
(Rust; ``pip install "edgeml[text]"``): no transformers, no torch on a device app's path.

An artifact converted from a Hugging Face folder names its tokenizer in its metadata (``ModelMeta.tokenizer``,
a ``NAME.tokenizer.json`` beside it). ``TextEncoder`` turns sentences into exactly the model's inputs (ids,
mask, type ids, position ids, of the model's dtypes), truncated to the longest sequence the model takes
and padded to the longest in the batch (or to the model's fixed sequence length, or to ``length``).
``encode`` runs a runtime on sentences and returns what its task means: embeddings, or ``Classified``.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, first_line, require
from .model_meta import ModelMeta
from .readable import regular_file
from .spec import TensorSpec

#: The roles a tokenizer fills, and the Encoding attribute each comes from (position ids are 0, 1, 2...).
_ENCODING = {"token_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
#: Texts run at once by ``encode`` unless told otherwise (or the model's batch is fixed).
DEFAULT_BATCH = 32
#: Output names that hold sentence embeddings, and token states to mean-pool, in order of preference.
EMBEDDING_OUTPUTS = ("sentence_embedding",)
TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
_FIX = "convert the model from a Hugging Face folder that holds its tokenizer.json (edgeml convert DIR)"


@dataclass
class Classified:
    """What ``encode`` returns for a classifier.

    text-classification: ``labels[i]`` is text i's most likely class name and ``scores[i]`` its probability;
    ``probabilities`` is (texts, classes), the softmax of the logits, columns in ``classes`` order.
    token-classification: the same per real token (padding and truncated tokens left out): ``labels[i]`` is a
    list of names, ``scores[i]`` and ``probabilities[i]`` arrays of text i's tokens.
    """

    labels: list
    scores: list | np.ndarray
    probabilities: list | np.ndarray
    classes: list[str]


def read_lines(path) -> list[str]:
    """The sentences of a text file, one a line (UTF-8; blank lines skipped)."""
    path = regular_file(path, "text file")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({first_line(exc)}); save it as UTF-8, one sentence a line") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror})") from exc
    lines = [line for line in lines if line]
    if not lines:
        raise InputError(f"{path} holds no sentences; write one sentence a line")
    return lines


class TextEncoder:
    """A model's tokenizer bound to its inputs: ``encoder(texts) -> {input name: array}``."""

    def __init__(self, path, specs: list[TensorSpec], meta: ModelMeta):
        tokenizers = require("tokenizers", "text")
        self.path = regular_file(path, "tokenizer file")
        try:
            self._tokenizer = tokenizers.Tokenizer.from_file(str(self.path))
        except Exception as exc:  # noqa: BLE001 - the Rust library raises untyped errors for any bad file
            raise InputError(f"{self.path} is not a tokenizers JSON file ({first_line(exc)}); {_FIX}") from exc
        self._lock = threading.Lock()
        self.specs = list(specs)
        self.roles = {s.name: meta.roles.get(s.name) for s in specs}
        other = [n for n, r in self.roles.items() if r not in (*_ENCODING, "position_ids")]
        if other:
            raise InputError(f"input {other[0]!r} of the model is not one a tokenizer makes (token ids, attention "
                             "mask, token type ids, position ids); run the model with m.run(feeds) instead")
        ids = [s for s in specs if self.roles[s.name] == "token_ids"]
        if not ids:
            raise InputError(f"the model has no token ids input (its inputs: {', '.join(s.name for s in specs)}); "
                             "run it with m.run(feeds)")
        self._sequence = ids[0].shape[1] if len(ids[0].shape) == 2 else None
        size, vocab = self._tokenizer.get_vocab_size(with_added_tokens=True), meta.vocab.get(ids[0].name)
        if vocab is not None and size > vocab:
            raise InputError(f"{self.path} has {size} tokens, but the model's input {ids[0].name!r} takes ids below "
                             f"{vocab}: the tokenizer is not this model's; {_FIX}")
        bounds = [b for b in (meta.max_length, meta.dim_max.get(self._sequence) if isinstance(self._sequence, str)
                              else self._sequence) if b]
        #: The longest sequence the model takes; texts are truncated to it, or to the file's own shorter setting.
        self.max_length = int(min(bounds)) if bounds else None
        own = (self._tokenizer.truncation or {}).get("max_length")
        self._truncate = min(b for b in (self.max_length, own) if b) if self.max_length or own else None
        padding = self._tokenizer.padding or {}
        self._pad = (int(padding.get("pad_id", self._pad_id())), int(padding.get("pad_type_id", 0)))
        self._tokenizer.no_padding()

    @classmethod
    def of(cls, runtime) -> "TextEncoder":
        """The encoder of a loaded artifact (``runtime.meta.tokenizer``, beside ``runtime.path``)."""
        meta = runtime.meta
        if not meta.tokenizer or not runtime.path:
            raise InputError(f"{runtime.what} has no tokenizer; {_FIX}")
        name = str(meta.tokenizer)
        if Path(name).name != name or name in ("", ".", ".."):  # metadata names a file beside the artifact, no path
            raise InputError(f"{runtime.what}: its metadata names the tokenizer {name!r}, which is not a file name; {_FIX}")
        path = Path(runtime.path).parent / name
        if not path.exists():
            raise InputError(f"{runtime.what} needs its tokenizer {path}, which is missing; copy it beside the "
                             f"model, or {_FIX}")
        return cls(path, runtime.inputs, meta)

    def _pad_id(self) -> int:
        for token in ("[PAD]", "<pad>", "<|pad|>"):
            found = self._tokenizer.token_to_id(token)
            if found is not None:
                return found
        return 0

    def sized(self, sizes: dict | None):
        """This encoder with the sequence length ``sizes`` (``--shape``) sets, if it sets one: texts -> feeds."""
        length = (sizes or {}).get(self._sequence) if isinstance(self._sequence, str) else None
        return functools.partial(self, length=length)

    def __call__(self, texts: Sequence[str], length: int | None = None) -> dict[str, np.ndarray]:
        """The model's inputs for ``texts``: padded at the end to ``length`` (or the model's fixed sequence
        length, else the longest text), truncated to it (else to ``max_length`` or the file's own limit)."""
        texts = _texts(texts)
        if isinstance(self._sequence, int):
            length = self._sequence
        if length is not None and self.max_length is not None and length > self.max_length:
            raise InputError(f"a sequence of {length} is beyond the longest this model takes, {self.max_length}; "
                             f"use {self.max_length} or less")
        limit = length or self._truncate
        with self._lock:  # the truncation setting lives in the shared tokenizer: set and use it in one step
            if limit:
                self._tokenizer.enable_truncation(int(limit))
            else:  # neither the model nor the file bounds it (a call with a length may have set one)
                self._tokenizer.no_truncation()
            encodings = self._tokenizer.encode_batch(list(texts))
        longest = max(len(e.ids) for e in encodings)
        if length and longest > length:  # the special tokens alone are longer
            raise InputError(f"{self.path.name} cannot truncate a text to a sequence of {length} (it gives {longest} "
                             "tokens: its special tokens need more room); use a longer sequence")
        width = length or max(longest, 1)
        values = {key: np.full((len(texts), width), pad, dtype=np.int64)
                  for key, pad in (("ids", self._pad[0]), ("type_ids", self._pad[1]), ("attention_mask", 0))}
        for row, encoding in enumerate(encodings):
            for key, array in values.items():
                got = getattr(encoding, key)
                array[row, :len(got)] = got
        feeds = {}
        for spec in self.specs:
            role = self.roles[spec.name]
            value = (np.broadcast_to(np.arange(width), (len(texts), width)) if role == "position_ids"
                     else values[_ENCODING[role]])
            feeds[spec.name] = value.astype(spec.np_dtype)
        return feeds


def _texts(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    try:
        texts = list(texts)
    except TypeError as exc:
        raise InputError(f"texts must be a list of strings, not a {type(texts).__name__}") from exc
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise InputError(f"texts must be strings; found a {type(bad).__name__}: {str(bad)[:40]!r}")
    if not texts:
        raise InputError("no texts given; pass a list of strings")
    return texts


def encode(runtime, texts, *, batch_size: int | None = None):
    """``runtime.encode``: tokenize ``texts``, run the model ``batch_size`` texts at a time, and return by task:

    - feature-extraction: a float32 (texts, dim) array: the ``sentence_embedding`` output, else the token
      states (``last_hidden_state``) mean-pooled over each text's real tokens;
    - text-/token-classification: a ``Classified`` named from the artifact's labels;
    - regression: the scores, a float32 (texts,) array (or (texts, k) for k outputs a text).

    A single string is one text.
    """
    from .spec import check_count

    texts = _texts(texts)
    encoder = runtime.text_encoder
    meta = runtime.meta
    first = runtime.inputs[0].shape[0] if runtime.inputs[0].shape else None
    if batch_size is None:
        batch_size = first if isinstance(first, int) else DEFAULT_BATCH
    batch_size = check_count(batch_size, "batch_size")
    if isinstance(first, int) and batch_size != first:
        raise InputError(f"{runtime.what} takes a fixed batch of {first}; use batch_size={first}")
    task = meta.task or _task_of(runtime)
    embeddings, classified = [], Classified([], [], [], [])
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        padded = chunk + [""] * (batch_size - len(chunk)) if isinstance(first, int) else chunk
        feeds = encoder(padded)
        mask = _mask(encoder, feeds)  # of the whole batch, padding texts of a fixed batch included
        outputs = runtime.run(feeds)
        if task == "feature-extraction":
            embeddings.append(_embedding(runtime, outputs, mask)[:len(chunk)])
        elif task == "regression":
            embeddings.append(np.asarray(outputs[runtime.output_names[0]], np.float32)[:len(chunk)])
        else:
            _classify(runtime, meta, task, {k: v[:len(chunk)] for k, v in outputs.items()}, mask[:len(chunk)],
                      classified)
    if task in ("feature-extraction", "regression"):
        values = np.concatenate(embeddings).astype(np.float32, copy=False)
        return values.reshape(len(values)) if task == "regression" and values.size == len(values) else values
    if task != "token-classification":
        classified.scores, classified.probabilities = np.asarray(classified.scores), np.stack(classified.probabilities)
    return classified


def _task_of(runtime) -> str:
    names = runtime.output_names
    if any(n in names for n in (*EMBEDDING_OUTPUTS, *TOKEN_OUTPUTS)):
        return "feature-extraction"
    if "logits" in names:
        return "token-classification" if len(runtime.outputs[names.index("logits")].shape) == 3 else "text-classification"
    raise InputError(f"{runtime.what} records no task and has no output encode knows ({', '.join(names)}); "
                     "run it with m.run(m.text_encoder(texts))")


def _mask(encoder: TextEncoder, feeds: dict) -> np.ndarray:
    name = next((n for n, r in encoder.roles.items() if r == "attention_mask"), None)
    if name is not None:
        return feeds[name].astype(bool)
    ids = next(n for n, r in encoder.roles.items() if r == "token_ids")
    return np.ones(feeds[ids].shape, dtype=bool)


def _embedding(runtime, outputs: dict, mask: np.ndarray) -> np.ndarray:
    name = next((n for n in (*EMBEDDING_OUTPUTS, *TOKEN_OUTPUTS) if n in outputs), runtime.output_names[0])
    value = np.asarray(outputs[name], dtype=np.float32)
    if value.ndim == 2:
        return value
    if value.ndim == 3 and value.shape[:2] == mask.shape:
        weights = mask[..., None].astype(np.float32)
        return (value * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    raise InputError(f"{runtime.what}: output {name!r} has shape {value.shape}, neither embeddings (texts x dim) nor "
                     "token states (texts x tokens x dim); run it with m.run(m.text_encoder(texts))")


def _classify(runtime, meta: ModelMeta, task: str, outputs: dict, mask: np.ndarray, into: Classified) -> None:
    """Append one batch's labels and probabilities (softmax of the logits) to ``into``, per text."""
    name = "logits" if "logits" in outputs else runtime.output_names[0]
    logits = np.asarray(outputs[name], dtype=np.float64)[:len(mask)]
    classes = list(meta.labels or [])
    if len(classes) != logits.shape[-1]:
        if classes:
            raise InputError(f"{runtime.what} names {len(classes)} labels but its output {name!r} has "
                             f"{logits.shape[-1]} classes; convert it again")
        classes = [f"LABEL_{i}" for i in range(logits.shape[-1])]
    into.classes = classes
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities = (shifted / shifted.sum(-1, keepdims=True)).astype(np.float32)
    for row, p in enumerate(probabilities):
        if task == "token-classification" and p.ndim == 2:
            p = p[mask[row]]
            into.labels.append([classes[k] for k in p.argmax(-1)])
        else:
            into.labels.append(classes[int(p.argmax(-1))])
        into.scores.append(p.max(-1))
        into.probabilities.append(p)
