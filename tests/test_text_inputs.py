"""Inputs that mean something for token models, --shape, reports that record the inputs, and text in the
runtime without torch: generated ids within the vocabulary and masks padded at the end, what input_meta reads
from a plain torch export, bench on .onnx files with shapes and with sentences, and ``m.encode`` on a tiny BERT
exported here (plain torch.onnx.export, metadata and tokenizer written by the test)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgeml
from edgeml.data import describe_feeds, format_inputs, parse_shapes, random_feeds, read_feeds, token_range
from edgeml.datafiles import open_source
from edgeml.errors import InputError
from edgeml.latency.reports import junit_xml, markdown, write_reports
from edgeml.latency.runner import Method
from edgeml.model_meta import ModelMeta, input_meta, read_meta, write_meta
from edgeml.spec import TensorSpec

from .conftest import SENTENCES_FILE

QUICK = Method(warmup_ms=0, warmup_runs=1, min_runs=5, min_seconds=0.02, max_seconds=5)
TOKENS = [TensorSpec(n, ("batch", "sequence"), "int64") for n in ("input_ids", "attention_mask", "token_type_ids")]
LABELS = ["negative", "neutral", "positive"]
TAGS = ["O", "B-X", "I-X", "B-Y", "I-Y"]


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir, tmp_path_factory):
    """The tiny BERT (torch, for references) and its plain dynamo export with four outputs: token states, a
    mean-pooled normalised sentence embedding, and a random sequence and token classification head."""
    import torch
    import transformers

    bert = transformers.BertModel.from_pretrained(tiny_bert_dir).eval()
    torch.manual_seed(1)

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert, self.cls, self.tag = bert, torch.nn.Linear(32, len(LABELS)), torch.nn.Linear(32, len(TAGS))

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return h, torch.nn.functional.normalize(pooled, dim=1), self.cls(h[:, 0]), self.tag(h)

    heads = Heads().eval()
    ids = torch.randint(1000, 30522, (2, 16))
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    dims = {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("sequence", max=128)}
    program = torch.onnx.export(heads, args, dynamo=True, verbose=False, dynamic_shapes=(dims, dims, dims),
                                input_names=[s.name for s in TOKENS],
                                output_names=["last_hidden_state", "sentence_embedding", "logits", "token_logits"])
    folder = tmp_path_factory.mktemp("tiny-onnx")
    program.save(str(folder / "plain.onnx"))
    return {"torch": heads, "plain": folder / "plain.onnx", "tokenizer": Path(tiny_bert_dir) / "tokenizer.json",
            "folder": folder}


def artifact(tiny, name: str, outputs: list[str], meta: ModelMeta | None, tokenizer: bool = True,
             rename: dict | None = None) -> Path:
    """The export with only ``outputs`` (renamed by ``rename``), ``meta`` written in, and the tokenizer beside
    it as NAME.tokenizer.json."""
    proto = onnx.load(str(tiny["plain"]))
    kept = [o for o in proto.graph.output if o.name in outputs]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    rename = rename or {}
    for node in proto.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for value in proto.graph.output:
        value.name = rename.get(value.name, value.name)
    if meta is not None:
        write_meta(proto, meta)
    folder = tiny["folder"] / name
    folder.mkdir(exist_ok=True)
    onnx.save(proto, str(folder / "model.onnx"))
    if tokenizer:
        shutil.copy(tiny["tokenizer"], folder / "model.tokenizer.json")
    return folder / "model.onnx"


def text_meta(task="feature-extraction", **extra) -> ModelMeta:
    return ModelMeta(task=task, tokenizer="model.tokenizer.json", max_length=128, **extra)


def reference(tiny, texts, output: int):
    """The torch model's output on what the tokenizer library makes of ``texts`` (padded to the longest)."""
    import tokenizers
    import torch

    tok = tokenizers.Tokenizer.from_file(str(tiny["tokenizer"]))
    tok.enable_truncation(128)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tok.encode_batch(texts)
    args = [torch.tensor([getattr(e, k) for e in encodings]) for k in ("ids", "attention_mask", "type_ids")]
    with torch.inference_mode():
        return tiny["torch"](*args)[output].numpy(), args[1].numpy().astype(bool)


# -- generated inputs -----------------------------------------------------------------------------------


def test_generated_token_inputs_mean_something():
    meta = ModelMeta(vocab={"input_ids": 30522}, dim_max={"sequence": 6})
    feeds = random_feeds(TOKENS, batch=64, seed=3, meta=meta)  # OTHER_DIM 8, bounded by the model's 6
    ids, mask, types = feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    assert ids.shape == mask.shape == types.shape == (64, 6) and ids.dtype == np.int64
    low, high = token_range(30522)
    assert low == 1000 and ids[mask == 1].min() >= low and ids.max() < high and (ids[mask == 0] == 0).all()
    assert len(np.unique(ids)) > 100  # not two ids
    lengths = mask.sum(1)
    assert lengths.min() >= 1 and lengths[0] == 6 and len(set(lengths)) > 2  # padded rows, never all zero
    assert all((row[:n] == 1).all() and (row[n:] == 0).all() for row, n in zip(mask, lengths))  # at the end
    assert (types == 0).all()
    position = random_feeds([TensorSpec("position_ids", ("batch", "sequence"), "int64")], batch=2, sizes={"sequence": 5})
    np.testing.assert_array_equal(position["position_ids"], [[0, 1, 2, 3, 4]] * 2)
    crafted = ModelMeta(vocab={"input_ids": "many"}, dim_max={"sequence": -1}, roles={"input_ids": "bogus"})
    assert random_feeds(TOKENS, meta=crafted)["input_ids"].shape == (1, 8)  # a crafted file's metadata is ignored
    # without metadata, names still give roles; an unknown vocabulary keeps ids to 0 and 1
    plain = random_feeds(TOKENS, batch=4)
    assert set(np.unique(plain["input_ids"])) <= {0, 1} and plain["attention_mask"][:, 0].all()


def test_sizes_set_symbolic_dims_within_the_models_largest():
    meta = ModelMeta(dim_max={"sequence": 128})
    feeds = random_feeds(TOKENS, batch=3, sizes={"sequence": 128}, meta=meta)
    assert {v.shape for v in feeds.values()} == {(3, 128)}
    assert random_feeds(TOKENS, sizes={"batch": 5})["input_ids"].shape == (5, 8)  # sizes win over batch
    with pytest.raises(InputError, match=r"--shape sequence=129 is beyond the model's largest sequence, 128; use sequence=128"):
        random_feeds(TOKENS, sizes={"sequence": 129}, meta=meta)
    with pytest.raises(InputError, match=r"no input of the model has a dim named 'seq' \(its symbolic dims: batch, sequence\)"):
        random_feeds(TOKENS, sizes={"seq": 4})
    with pytest.raises(InputError, match="batch 9 is beyond the model's largest batch, 8"):
        random_feeds(TOKENS, batch=9, meta=ModelMeta(dim_max={"batch": 8}))


def test_parse_shapes():
    assert parse_shapes("sequence=128") == {"sequence": 128}
    assert parse_shapes(["sequence=128,batch=4", "height=224"]) == {"sequence": 128, "batch": 4, "height": 224}
    assert parse_shapes({"sequence": 16}) == {"sequence": 16} and parse_shapes(None) == {}
    for bad, message in [("sequence", "bad --shape 'sequence'"), ("sequence=0", "whole number >= 1"),
                         ("sequence=-3", "bad --shape"), ("sequence=1.5", "bad --shape"), ("sequence=١٢٨", "ASCII digits"),
                         ("=8", "bad --shape"), ("2d=8", "bad --shape"), ("a=1,a=2", "gives a twice"),
                         ({"s": True}, "whole number >= 1"), ([3], "not a int")]:
        with pytest.raises(InputError, match=message):
            parse_shapes(bad)


def test_describe_feeds_is_json_and_one_line():
    feeds = random_feeds(TOKENS[:2], batch=2, sizes={"sequence": 4})
    description = describe_feeds(feeds, "generated, seed 0")
    assert json.loads(json.dumps(description)) == {"origin": "generated, seed 0", "tensors": [
        {"name": "input_ids", "shape": [2, 4], "dtype": "int64"}, {"name": "attention_mask", "shape": [2, 4], "dtype": "int64"}]}
    assert format_inputs(description) == "input_ids 2×4 int64, attention_mask 2×4 int64; generated, seed 0"


# -- what a graph says about its inputs -----------------------------------------------------------------


def test_input_meta_reads_a_plain_torch_export(tiny):
    meta = input_meta(tiny["plain"])
    assert meta.roles == {"input_ids": "token_ids", "attention_mask": "attention_mask", "token_type_ids": "token_type_ids"}
    assert meta.vocab == {"input_ids": 30522, "token_type_ids": 2} and meta.task is None and meta.dim_max == {}
    with edgeml.load(tiny["plain"]) as m:  # the same from a runtime, and generated inputs run
        assert m.meta == meta
        m.run(random_feeds(m.inputs, batch=2, sizes={"sequence": 128}, meta=m.meta))


def test_input_meta_keeps_what_the_metadata_says(tiny):
    proto = onnx.load(str(tiny["plain"]))
    write_meta(proto, ModelMeta(task="feature-extraction", max_length=64, roles={"token_type_ids": "values"},
                                vocab={"input_ids": 30000}))
    meta = input_meta(proto)
    assert meta.roles["token_type_ids"] == "values" and meta.roles["input_ids"] == "token_ids"
    assert meta.vocab == {"input_ids": 30000, "token_type_ids": 2} and meta.dim_max == {"sequence": 64}
    assert read_meta(proto).dim_max == {}  # nothing written back


def test_index_tables_behind_casts_quantized_tables_and_fused_embeddings():
    from onnx import TensorProto, helper

    from edgeml.onnx_graph import index_table_rows

    table = helper.make_tensor("q", TensorProto.INT8, [500, 4], np.zeros(2000, np.int8).tobytes(), raw=True)
    words, positions, segments = (helper.make_tensor(n, TensorProto.FLOAT, [rows, 4], np.zeros(rows * 4, np.float32))
                                  for n, rows in (("w", 700), ("p", 64), ("s", 3)))
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
             helper.make_node("DequantizeLinear", ["q", "scale"], ["table"]),
             helper.make_node("Gather", ["table", "ids64"], ["e"]),
             helper.make_node("EmbedLayerNormalization", ["fused_ids", "segment_ids", "w", "p", "s", "gamma", "beta"],
                              ["out", "mask_index"], domain="com.microsoft")]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "sequence"])
              for n in ("ids", "fused_ids", "segment_ids", "other")]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
                              initializer=[table, scale, words, positions, segments])
    assert index_table_rows(helper.make_model(graph)) == {"ids": 500, "fused_ids": 700, "segment_ids": 3}


# -- bench: shapes, text, and the reports --------------------------------------------------------------


def test_bench_onnx_with_shapes_records_them_in_every_report(tiny, tmp_path):
    result = edgeml.bench(tiny["plain"], shapes="sequence=32", batch=2, threads=1, method=QUICK)
    tensors = [{"name": s.name, "shape": [2, 32], "dtype": "int64"} for s in TOKENS]
    assert result.inputs["tensors"] == tensors and result.to_dict()["inputs"]["tensors"] == tensors
    assert result.inputs["origin"].startswith("generated, seed 0: input_ids ids in [1000, 30522)")
    write_reports([result], json_path=tmp_path / "b.json", html_path=tmp_path / "b.html")
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["inputs"]["tensors"] == tensors
    line = "input_ids 2×32 int64, attention_mask 2×32 int64, token_type_ids 2×32 int64"
    assert line in markdown([result]) and line in junit_xml([result]) and line in (tmp_path / "b.html").read_text()
    write_reports([result], json_path=tmp_path / "base.json", samples=True)
    again = edgeml.bench(tiny["plain"], shapes="sequence=16", batch=2, threads=1, method=QUICK,
                         baseline=tmp_path / "base.json", max_regression=10.0)
    assert any(n.startswith("the baseline timed other inputs (input_ids 2×32 int64") and "now input_ids 2×16" in n
               for n in again.notes)
    with pytest.raises(InputError, match="--shape batch=4: batch is the batch dim; set it with --batch"):
        edgeml.bench(tiny["plain"], shapes="batch=4", method=QUICK)
    with pytest.raises(InputError, match="has its own shapes: drop --shape"):
        np.save(tmp_path / "ids.npy", np.zeros((2, 4), np.int64))
        edgeml.bench(tiny["plain"], shapes="sequence=4", data=tmp_path / "ids.npy", method=QUICK)


def test_bench_with_text_tokenizes_sentences(tiny, sentences):
    path = artifact(tiny, "bench-text", ["sentence_embedding"], text_meta())
    result = edgeml.bench(path, text=SENTENCES_FILE, batch=2, threads=1, method=QUICK)
    longest = max(len(e) for e in edgeml.load(path).text_encoder(sentences)["input_ids"])
    assert [t["shape"] for t in result.inputs["tensors"]] == [[2, longest]] * 3
    assert result.inputs["origin"] == f"16 sentences of {SENTENCES_FILE}, tokenized by model.tokenizer.json"
    fixed = edgeml.bench(path, data=str(SENTENCES_FILE), shapes={"sequence": 100}, threads=1, method=QUICK)
    assert [t["shape"] for t in fixed.inputs["tensors"]] == [[1, 100]] * 3
    with pytest.raises(InputError, match="beyond the model's largest sequence, 128"):
        edgeml.bench(path, text=SENTENCES_FILE, shapes="sequence=129", method=QUICK)
    with pytest.raises(InputError, match="cannot truncate a text to a sequence of 1"):
        edgeml.bench(path, text=SENTENCES_FILE, shapes="sequence=1", method=QUICK)
    with pytest.raises(InputError, match="give --data or --text, not both"):
        edgeml.bench(path, text=SENTENCES_FILE, data=SENTENCES_FILE, method=QUICK)
    with pytest.raises(InputError, match="has no tokenizer; convert the model from a Hugging Face folder"):
        edgeml.bench(tiny["plain"], text=SENTENCES_FILE, method=QUICK)


def test_text_file_as_calibration_data(tiny, sentences):
    path = artifact(tiny, "calib-text", ["sentence_embedding"], text_meta())
    with edgeml.load(path) as m:
        source = open_source(SENTENCES_FILE, m.inputs, text=m.text_encoder)
        calib, held = source.split(48, 16)
        assert len(source) == len(sentences) and len(calib) == 48 and len(held) == 16
        feeds = read_feeds(SENTENCES_FILE, m.inputs, limit=5, text=m.text_encoder)
        assert feeds["input_ids"].shape[0] == 5 and (feeds["input_ids"][:, 0] == 101).all()  # [CLS] first
    with pytest.raises(InputError, match="sentences need the model's tokenizer"):
        open_source(SENTENCES_FILE, TOKENS)


# -- m.encode ------------------------------------------------------------------------------------------


def test_encode_embeddings_match_the_model_on_the_tokenizers_output(tiny, sentences):
    pooled = artifact(tiny, "pooled", ["last_hidden_state"], text_meta())
    embedded = artifact(tiny, "embedded", ["last_hidden_state", "sentence_embedding"], text_meta())
    states, mask = reference(tiny, sentences, 0)
    weights = mask[..., None]
    expected_pooled = (states * weights).sum(1) / weights.sum(1)
    with edgeml.load(pooled) as m:
        got = m.encode(sentences, batch_size=16)
        assert got.shape == (len(sentences), 32) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected_pooled, atol=1e-4)
        np.testing.assert_allclose(m.encode(sentences[0]), expected_pooled[:1], atol=1e-4)  # one string: one text
    with edgeml.load(embedded) as m:
        np.testing.assert_allclose(m.encode(sentences), reference(tiny, sentences, 1)[0], atol=1e-4)


def test_the_tokenizer_is_safe_to_share_between_threads(tiny, sentences):
    """Each call sets the shared tokenizer's truncation: threads asking for different lengths at once must
    each get their own (a device app serves requests from several threads)."""
    from concurrent.futures import ThreadPoolExecutor

    path = artifact(tiny, "threads", ["sentence_embedding"], text_meta())
    with edgeml.load(path) as m:
        encoder = m.text_encoder
        expected = {length: encoder(sentences, length)["input_ids"] for length in (8, 32)}
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda length: (length, encoder(sentences, length)["input_ids"]), [8, 32] * 100))
    assert all(np.array_equal(ids, expected[length]) for length, ids in results)


def test_encode_classifiers_name_their_labels(tiny, sentences):
    texts = sentences[:5]
    path = artifact(tiny, "classifier", ["logits"], text_meta("text-classification", labels=LABELS))
    logits = reference(tiny, texts, 2)[0].astype(np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    with edgeml.load(path) as m:
        got = m.encode(texts, batch_size=2)
    np.testing.assert_allclose(got.probabilities, expected, atol=1e-5)
    assert got.labels == [LABELS[i] for i in expected.argmax(-1)] and got.classes == LABELS
    np.testing.assert_allclose(got.scores, expected.max(-1), atol=1e-5)

    tagger = artifact(tiny, "tagger", ["token_logits"], text_meta("token-classification", labels=TAGS),
                      rename={"token_logits": "logits", "logits": "sequence_logits"})
    token_logits, mask = reference(tiny, texts, 3)
    with edgeml.load(tagger) as m:
        tags = m.encode(texts)
    assert [len(t) for t in tags.labels] == list(mask.sum(1))  # real tokens only
    assert tags.labels[0] == [TAGS[i] for i in token_logits[0][mask[0]].argmax(-1)]


def test_encode_refuses_what_cannot_work(tiny):
    with edgeml.load(tiny["plain"]) as m:
        with pytest.raises(InputError, match="has no tokenizer; convert the model from a Hugging Face folder that holds its tokenizer.json"):
            m.encode(["a sentence"])
    small = artifact(tiny, "small-vocab", ["sentence_embedding"], text_meta(vocab={"input_ids": 1000}))
    with edgeml.load(small) as m:
        with pytest.raises(InputError, match="has 30522 tokens, but the model's input 'input_ids' takes ids below 1000: "
                                             "the tokenizer is not this model's"):
            m.encode(["a sentence"])
    missing = artifact(tiny, "no-file", ["sentence_embedding"], text_meta(), tokenizer=False)
    with edgeml.load(missing) as m:
        with pytest.raises(InputError, match="needs its tokenizer .*model.tokenizer.json, which is missing"):
            m.encode(["a sentence"])
    escaping = artifact(tiny, "escaping", ["sentence_embedding"], ModelMeta(tokenizer="../tokenizer.json"))
    with edgeml.load(escaping) as m:
        with pytest.raises(InputError, match="is not a file name"):
            m.encode(["a sentence"])
        with pytest.raises(InputError, match="texts must be strings"):
            m.encode([1, 2])


def test_encode_imports_neither_torch_nor_transformers(tiny):
    path = artifact(tiny, "light", ["sentence_embedding"], text_meta())
    script = f"""
import sys, json
import edgeml
m = edgeml.load({str(path)!r})
e = m.encode(["a sentence", "and another, longer one"])
print(json.dumps([list(e.shape), [k for k in ("torch", "transformers") if k in sys.modules]]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [[2, 32], []]
