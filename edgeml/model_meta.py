"""What an ONNX artifact says about itself: its task, label names, tokenizer and the meaning of its inputs.

convert writes these as ONNX ``metadata_props`` (keys ``edgeml.*``), so an artifact carries them wherever
it is copied; the INT8 gate, generated inputs, ``bench`` and the runtime's ``encode`` read them back. Only
JSON-safe values; a file that holds none of them reads as an empty ``ModelMeta``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace

from .onnx_graph import graph_input_specs, index_table_rows, read_onnx, set_metadata
from .spec import NUMPY_DTYPES, DimRange, TensorSpec, with_ranges

#: Tasks whose outputs are class scores: only these are judged on labels by the INT8 gate.
CLASSIFIER_TASKS = ("text-classification", "token-classification", "classification")
#: Every task edgeml knows: the Hugging Face ones it exports, and the generic ones --task can name.
TASKS = ("feature-extraction", *CLASSIFIER_TASKS, "regression", "other")
#: Input roles: what values an input holds, so that generated inputs mean something.
ROLES = ("values", "token_ids", "attention_mask", "token_type_ids", "position_ids")

_PREFIX = "edgeml."

#: Input names (lower case, without a ``:0`` suffix) that say an input's role, checked in this order.
ROLE_NAMES = (
    ("token_type_ids", re.compile(r"(.+_)?(token_type|segment|type)_ids")),
    ("position_ids", re.compile(r"(.+_)?(position|pos)_ids")),
    ("attention_mask", re.compile(r"(.+_)?(attention_mask|input_mask|mask)")),
    ("token_ids", re.compile(r"(.+_)?(input_ids|token_ids|ids|tokens)")),
)


@dataclass
class ModelMeta:
    task: str | None = None
    labels: list[str] | None = None  # class names, in output order (a config's id2label)
    tokenizer: str | None = None  # file name of the tokenizer.json beside the artifact
    max_length: int | None = None  # longest sequence the model takes (max_position_embeddings)
    roles: dict[str, str] = field(default_factory=dict)  # input name -> one of ROLES
    vocab: dict[str, int] = field(default_factory=dict)  # integer input name -> values are in [0, vocab)
    dim_max: dict[str, int] = field(default_factory=dict)  # symbolic dim name -> largest size the model takes
    #: symbolic dim name -> [min, opt, max] declared at convert (``--input x:1..32x4``, ``--shape seq=8..128``):
    #: what TensorRT profiles and CoreML RangeDim are built for; its max is in ``dim_max`` too.
    dim_range: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ranges(self) -> dict[str, DimRange]:
        """``dim_range`` as DimRanges, the well-formed entries only (a crafted file's may hold anything)."""
        return {k: DimRange(*v) for k, v in self.dim_range.items()
                if isinstance(v, list) and len(v) == 3 and all(_count(x) for x in v) and v[0] <= v[1] <= v[2]}

    def with_ranges(self, ranges: dict[str, DimRange]) -> "ModelMeta":
        """A copy that records ``ranges`` (in ``dim_range``, their max in ``dim_max``)."""
        return replace(self, dim_range={**self.dim_range, **{k: list(v) for k, v in ranges.items()}},
                       dim_max={**self.dim_max, **{k: v.max for k, v in ranges.items()}})

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
    set_metadata(proto, meta.to_props())


def infer_role(spec: TensorSpec) -> str | None:
    """The role an input's name says it has (``input_ids`` -> token_ids...), for batch x sequence inputs of a
    fitting dtype (integers; a mask may also be bool or float); None when the name says nothing."""
    if len(spec.shape) != 2 or spec.dtype == "str":
        return None
    name = spec.name.lower().rsplit(":", 1)[0]
    for role, pattern in ROLE_NAMES:
        if pattern.fullmatch(name):
            kind = dtype_kind(spec)
            return role if kind in "iu" or (role == "attention_mask" and kind in "bf") else None
    return None


def input_meta(model) -> ModelMeta:
    """What a model's inputs mean: its stored metadata (``read_meta``), completed where it is silent.

    ``model``: an ONNX ``ModelProto``, the path of an ``.onnx`` file, or a runtime. Roles come from the input
    names (``infer_role``); the range of integer inputs from the constant table each one indexes
    (``onnx_graph.index_table_rows``: ``input_ids`` -> the word-embedding rows); the longest sequence
    (``max_length``) bounds the sequence dim of token inputs in ``dim_max``. Works on files edgeml did not
    write (plain ``torch.onnx.export``, Optimum). A runtime that is not ONNX (a torch source) has no graph to
    read: roles from names only.
    """
    proto = None
    if hasattr(model, "graph"):
        proto = model
    elif not hasattr(model, "inputs"):  # a path
        proto = read_onnx(model, weights=False)
    meta = checked_meta(read_meta(proto if proto is not None else model))
    specs = graph_input_specs(proto) if proto is not None else list(model.inputs)
    for spec in specs:
        role = meta.roles.get(spec.name) or infer_role(spec)
        if role:
            meta.roles[spec.name] = role
    integers = [s.name for s in specs if dtype_kind(s) in ("i", "u")]
    if any(name not in meta.vocab for name in integers):
        path = str(getattr(model, "path", None) or "")
        if proto is None and getattr(model, "backend", None) == "onnxruntime" and path.lower().endswith(".onnx"):
            proto = read_onnx(path, weights=False)  # an ORT format file (.ort) has no ONNX graph to read
        found = index_table_rows(proto) if proto is not None else {}
        meta.vocab = {**{k: v for k, v in found.items() if k in integers}, **meta.vocab}
    if meta.max_length:
        for spec in specs:
            if meta.roles.get(spec.name) in ("token_ids", "attention_mask", "token_type_ids", "position_ids") \
                    and isinstance(spec.shape[-1], str) and spec.shape[-1] != "?":
                meta.dim_max.setdefault(spec.shape[-1], int(meta.max_length))
    return meta


def checked_meta(meta: ModelMeta | None) -> ModelMeta:
    """``meta`` with only well-formed entries (a foreign or crafted file's metadata may hold anything): known
    roles, sizes that are whole numbers >= 1, labels that are text."""
    meta = meta or ModelMeta()
    labels = meta.labels if isinstance(meta.labels, list) and all(isinstance(x, str) for x in meta.labels) else None
    return ModelMeta(task=meta.task if isinstance(meta.task, str) else None, labels=labels,
                     tokenizer=meta.tokenizer if isinstance(meta.tokenizer, str) else None,
                     max_length=meta.max_length if _count(meta.max_length) else None,
                     roles={k: v for k, v in meta.roles.items() if v in ROLES},
                     vocab={k: v for k, v in meta.vocab.items() if _count(v)},
                     dim_max={k: v for k, v in meta.dim_max.items() if _count(v)},
                     dim_range={k: list(v) for k, v in meta.ranges.items()})


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def ranged_specs(specs, meta: ModelMeta | None) -> list[TensorSpec]:
    """``specs`` (an artifact's inputs, read from its graph) with the ranges its metadata records for dims the
    graph leaves unbounded (ONNX has no ranges; a CoreML spec has its own, which win): what a TensorRT or
    CoreML target builds for, and what inspect shows."""
    own = {d for s in specs for d in s.ranges}
    return with_ranges(specs, {d: r for d, r in checked_meta(meta).ranges.items() if d not in own})


def dtype_kind(spec: TensorSpec) -> str:
    """The numpy kind of an input's dtype ('f', 'i', ...), '' for one no array can have."""
    dtype = NUMPY_DTYPES.get(spec.dtype)
    return dtype.kind if dtype is not None else ""
