"""What an ONNX artifact says about itself: its task, label names, tokenizer and the meaning of its inputs.

convert writes these as ONNX ``metadata_props`` (keys ``edgeml.*``), so an artifact carries them wherever
it is copied; the INT8 gate, generated inputs, ``bench`` and the runtime's ``encode`` read them back. Only
JSON-safe values; a file that holds none of them reads as an empty ``ModelMeta``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

#: Tasks whose outputs are class scores: only these are judged on labels by the INT8 gate.
CLASSIFIER_TASKS = ("text-classification", "token-classification", "classification")
#: Every task edgeml knows: the Hugging Face ones it exports, and the generic ones --task can name.
TASKS = ("feature-extraction", *CLASSIFIER_TASKS, "regression", "other")
#: Input roles: what values an input holds, so that generated inputs mean something.
ROLES = ("values", "token_ids", "attention_mask", "token_type_ids", "position_ids")

_PREFIX = "edgeml."


@dataclass
class ModelMeta:
    task: str | None = None
    labels: list[str] | None = None  # class names, in output order (a config's id2label)
    tokenizer: str | None = None  # file name of the tokenizer.json beside the artifact
    max_length: int | None = None  # longest sequence the model takes (max_position_embeddings)
    roles: dict[str, str] = field(default_factory=dict)  # input name -> one of ROLES
    vocab: dict[str, int] = field(default_factory=dict)  # integer input name -> values are in [0, vocab)
    dim_max: dict[str, int] = field(default_factory=dict)  # symbolic dim name -> largest size the model takes

    @property
    def is_classifier(self) -> bool:
        return self.task in CLASSIFIER_TASKS

    def to_props(self) -> dict[str, str]:
        """``metadata_props`` entries for the set fields."""
        return {_PREFIX + key: json.dumps(value) for key, value in asdict(self).items() if value not in (None, {}, [])}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ModelMeta":
        """Read back what ``to_props`` wrote; unknown or malformed entries are ignored (a foreign file's)."""
        values = {}
        for name in cls.__dataclass_fields__:
            raw = props.get(_PREFIX + name)
            if raw is None:
                continue
            try:
                values[name] = json.loads(raw)
            except ValueError:
                continue
        meta = cls()
        for name, value in values.items():
            default = getattr(meta, name)
            if isinstance(default, dict) and not isinstance(value, dict):
                continue
            setattr(meta, name, value)
        return meta


def read_meta(model) -> ModelMeta:
    """The ModelMeta of an ONNX ``ModelProto`` or of a runtime/anything with a ``metadata`` mapping."""
    props = getattr(model, "metadata", None)
    if props is None:
        props = {p.key: p.value for p in model.metadata_props}
    return ModelMeta.from_props(dict(props))


def write_meta(proto, meta: ModelMeta) -> None:
    """Store ``meta`` in the ONNX ``proto``'s metadata_props (replacing earlier edgeml entries)."""
    from .onnx_graph import set_metadata

    set_metadata(proto, meta.to_props())
