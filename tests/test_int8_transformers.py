"""INT8 on transformers: BERT encoders exported with plain ``torch.onnx.export`` (as a user may bring them from
any exporter), quantized and judged the way their outputs mean: embeddings on cosine over real tokens,
classifiers on labels; per-channel weights, int8 embedding tables, fallback rounds for dynamic INT8, static
INT8 through attention masks with every calibration method, and no temporary file left behind.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

import edgeml
from edgeml.calibration.int8 import Int8Options
from edgeml.errors import CheckFailed
from edgeml.model_meta import ModelMeta, write_meta
from edgeml.validate import compare

from .conftest import torch

transformers = pytest.importorskip("transformers")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class _Embedder(torch.nn.Module):
    """A BertModel as sentence-transformers uses it: token states and their masked mean, normalized."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        states = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return states, torch.nn.functional.normalize(pooled, p=2, dim=1)


class _Classifier(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def _tokens(folder, sentences) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(128)
    encoded = tokenizer.encode_batch(sentences)
    return {"input_ids": np.array([e.ids for e in encoded], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], np.int64)}


def _export(module, feeds, path, outputs):
    batch, sequence = torch.export.Dim("batch", max=1024), torch.export.Dim("sequence", max=128)
    args = tuple(torch.from_numpy(feeds[name][:2]) for name in INPUTS)
    with torch.inference_mode():
        program = torch.onnx.export(module.eval(), args, dynamo=True, input_names=list(INPUTS), output_names=outputs,
                                    dynamic_shapes=tuple({0: batch, 1: sequence} for _ in INPUTS), verbose=False)
    program.save(str(path))
    return path


def _exported(source, sentences, folder, auto: str, wrapper, outputs, name: str):
    """``source`` loaded with transformers' ``auto`` class, wrapped and exported to ``folder/name``; its
    sentences tokenized into ``folder/sentences.npz``."""
    feeds = _tokens(source, sentences)
    np.savez(folder / "sentences.npz", **feeds)
    model = getattr(transformers, auto).from_pretrained(str(source))
    return _export(wrapper(model), feeds, folder / name, outputs), folder / "sentences.npz"


@pytest.fixture(scope="module")
def bert(tiny_bert_dir, sentences, tmp_path_factory):
    """The tiny BERT embedder as ONNX (no edgeml metadata), and its sentences tokenized in a .npz."""
    return _exported(tiny_bert_dir, sentences, tmp_path_factory.mktemp("bert-int8"), "AutoModel", _Embedder,
                     ["last_hidden_state", "sentence_embedding"], "bert.onnx")


@pytest.fixture(scope="module")
def classifier(tiny_bert_classifier_dir, sentences, tmp_path_factory):
    """The tiny BERT sequence classifier as ONNX, with and without the task in its metadata."""
    import onnx

    plain, tokens = _exported(tiny_bert_classifier_dir, sentences, tmp_path_factory.mktemp("bert-cls-int8"),
                              "AutoModelForSequenceClassification", _Classifier, ["logits"], "plain.onnx")
    proto = onnx.load(str(plain))
    write_meta(proto, ModelMeta(task="text-classification", labels=["negative", "neutral", "positive"]))
    onnx.save(proto, str(plain.parent / "tagged.onnx"))
    return plain, plain.parent / "tagged.onnx", tokens


def _quantization(model, out, **options):
    return edgeml.convert(model, "onnx", out, int8=Int8Options(**options), optimize=False,
                          check=False).artifacts[1].record["quantization"]


def _isolated(tmp_path, monkeypatch):
    """An empty current folder and an empty temp folder, to see what a run leaves in either."""
    cwd, temp = tmp_path / "cwd", tmp_path / "temp"
    cwd.mkdir()
    temp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return cwd, temp


def test_embedding_model_dynamic_int8_leaves_no_litter(bert, tmp_path, monkeypatch):
    """Judged on cosine over real tokens (never on labels, though sentence_embedding is 2-D), per-channel
    weights and an int8 embedding table; nothing written to the current or the temp directory."""
    import onnx
    from onnx import numpy_helper

    model, data = bert
    cwd, temp = _isolated(tmp_path, monkeypatch)
    report = _quantization(model, tmp_path / "out", eval_data=data)
    assert list(cwd.iterdir()) == [] and list(temp.iterdir()) == []
    # the dynamo export defeats symbolic shape inference: the case where onnxruntime writes its temp files
    assert report["pre_process"] == "quant_pre_process without symbolic shape inference"
    accuracy = report["accuracy"]
    assert accuracy["judged_on"] == "cosine" and accuracy["label_agreement"] is None and accuracy["passed"]
    assert accuracy["masked_outputs"] == ["last_hidden_state"] and "on real tokens only" in accuracy["summary"]
    assert report["evaluation_data"] == "eval_data" and accuracy["samples"] == 66
    assert report["recipe"]["weights"] == "int8 symmetric per channel"
    assert report["recipe"]["embeddings"].startswith("3 table(s) stored as 8-bit")  # word, position, token type
    assert report["size_int8_bytes"] < report["size_fp32_bytes"] / 3  # the 30522-word table dominates
    graph = onnx.load(str(tmp_path / "out" / "bert.int8.onnx")).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    zero_points = [values[n.input[3]] for n in graph.node if n.op_type == "MatMulInteger"]
    assert zero_points and all(zp.size > 1 for zp in zero_points)  # one per output channel
    tables = [values[n.input[0]] for n in graph.node if n.op_type == "Gather" and n.input[0] in values]
    assert max(t.size for t in tables if t.dtype.itemsize == 1) == 30522 * 32


def test_generated_evaluation_inputs_are_token_ids(bert, tmp_path):
    model, _ = bert
    report = _quantization(model, tmp_path, max_rounds=0)
    assert report["evaluation_data"] == "generated"
    assert "input_ids ids in [1000, 30522)" in report["accuracy"]["inputs_from"]
    assert report["accuracy"]["judged_on"] == "cosine"


def test_classifier_is_judged_on_labels(classifier, tmp_path):
    """The task from the artifact's metadata, or from ``task``; ``task`` also overrides the metadata."""
    plain, tagged, data = classifier
    by_meta = _quantization(tagged, tmp_path / "meta", eval_data=data)
    assert by_meta["accuracy"]["judged_on"] == "label agreement" and by_meta["task"] == "text-classification"
    by_task = _quantization(plain, tmp_path / "task", eval_data=data, task="text-classification")
    assert by_task["accuracy"]["judged_on"] == "label agreement"
    assert by_task["accuracy"]["label_agreement"] >= 0.99 and by_task["accuracy"]["passed"]
    overridden = _quantization(tagged, tmp_path / "override", eval_data=data, task="feature-extraction")
    assert overridden["accuracy"]["judged_on"] == "cosine" and "task" in overridden


def _masked_pair(folder, padding_shift: float, token_shift: float):
    """Two models of x (batch, sequence, 4) and its mask: y = x, and y = x + padding_shift at padded
    positions + token_shift at real ones."""
    import onnx
    from onnx import TensorProto, helper

    def save(name, nodes):
        graph = helper.make_graph(
            nodes, name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4]),
             helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 4])],
            [helper.make_tensor("shift", TensorProto.FLOAT, [2], [padding_shift, token_shift]),
             helper.make_tensor("axis", TensorProto.INT64, [1], [-1])])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / f"{name}.onnx"))
        return folder / f"{name}.onnx"

    same = save("same", [helper.make_node("Identity", ["x"], ["y"])])
    shifted = save("shifted", [helper.make_node("Gather", ["shift", "attention_mask"], ["s"]),
                               helper.make_node("Unsqueeze", ["s", "axis"], ["s3"]),
                               helper.make_node("Add", ["x", "s3"], ["y"])])
    return same, shifted


def test_sequence_outputs_are_compared_on_real_tokens_only(tmp_path):
    rng = np.random.default_rng(0)
    mask = np.ones((4, 6), np.int64)
    mask[1:, 3:] = 0
    feeds = {"x": rng.standard_normal((4, 6, 4)).astype(np.float32), "attention_mask": mask}
    same, padding = _masked_pair(tmp_path, 100.0, 0.0)
    result = compare(same, padding, feeds, mask_input="attention_mask")
    assert result.passed and result.outputs[0].max_abs == 0 and result.outputs[0].min_row_cosine == 1
    assert not compare(same, padding, feeds).passed  # unmasked, the padding counts
    (tmp_path / "tokens").mkdir()
    same, tokens = _masked_pair(tmp_path / "tokens", 0.0, 0.5)
    result = compare(same, tokens, feeds, mask_input="attention_mask")
    assert not result.passed and result.outputs[0].max_abs == pytest.approx(0.5)


def test_dynamic_int8_keeps_the_layer_it_breaks_in_fp32(tmp_path):
    """A hidden channel of 10000 that the last layer ignores: quantized at run time, the last MatMul's input
    keeps nothing of the other channels. The fallback finds that MatMul by its own error and keeps it FP32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, w2, w3 = (rng.standard_normal(shape).astype(np.float32) / 8 for shape in ((64, 64), (64, 64), (64, 10)))
    bias = np.zeros(64, np.float32)
    w2[:, 0], bias[0], w3[0] = 0, 10000, 0
    weights = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"), (bias, "b2"))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="first"), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="second"),
             helper.make_node("Add", ["h2", "b2"], ["a2"]), helper.make_node("Relu", ["a2"], ["r2"]),
             helper.make_node("MatMul", ["r2", "w3"], ["y"], name="last")]
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "outlier.onnx"))
    messages = []
    result = edgeml.convert(tmp_path / "outlier.onnx", "onnx", tmp_path / "out", int8=True, optimize=False,
                            check=False, progress=messages.append)
    report = result.artifacts[1].record["quantization"]
    assert report["mode"] == "dynamic" and report["rounds"] == 2 and report["excluded_layers"] == ["last"]
    assert report["accuracy"]["passed"] and any("FAILED" in m for m in messages)
    assert report["recipe"]["weights"] == "int8 symmetric per channel"
    assert edgeml.inspect(result.artifacts[1].path)["ops"]["MatMulInteger"] == 2


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_static_int8_through_an_attention_mask(bert, tmp_path, method, monkeypatch):
    """The mask path's -3.4e38 stays out of the ranges: every method ends in a file or a clean gate failure,
    and leaves nothing in the current or the temp directory."""
    model, data = bert
    cwd, temp = _isolated(tmp_path, monkeypatch)
    try:
        report = _quantization(model, tmp_path, calib=data, calib_samples=40, eval_samples=26, method=method,
                               max_rounds=1)
    except CheckFailed as failure:
        report = failure.check
        assert "--calib-method" in str(failure) and method not in str(failure).split("--calib-method")[1][:30]
    assert any("attention-mask path" in note for note in report["notes"])
    assert report["accuracy"]["cosine"] > 0.9 and report["evaluation_data"] == "held-out calib"
    assert list(cwd.iterdir()) == [] and list(temp.iterdir()) == []


def test_a_failed_gate_names_only_what_can_change_it(bert, tmp_path):
    model, data = bert
    with pytest.raises(CheckFailed) as failure:
        _quantization(model, tmp_path, eval_data=data, min_cosine=1.0, max_rounds=0)
    message = str(failure.value)
    assert "--min-cosine" in message and "--calib data for static INT8" in message
    assert "--calib-method" not in message and "--max-accuracy-drop" not in message
    assert not (tmp_path / "bert.int8.onnx").exists()


def _outlier_model(path):
    """tokens (batch, sequence, 16) @ W + b, W random: the shape of a transformer's Q/K/V or FFN MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "bias")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["xw"], name="proj"), helper.make_node("Add", ["xw", "bias"], ["y"])],
        "outlier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 8])], [weight, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _tokens_with_outliers(seed):
    """Channel 3 is 30x the others and token 0 ([CLS]) 8x the rest: BERT's LayerNorm outputs in miniature."""
    x = np.random.default_rng(seed).normal(size=(4, 12, 16)).astype(np.float32)
    x[..., 3] *= 30
    x[:, 0] *= 8
    return {"x": x}


def test_per_token_scales_are_exact_in_fp32_and_help_int8_on_outliers(tmp_path):
    """scale_rows changes nothing in FP32, and INT8 of the rewritten model loses far less on a MatMul whose
    input has an outlier channel and an outlier token (MiniLM: lowest sentence cosine 0.94 -> 0.99)."""
    from edgeml.calibration.quantize import OUTLIER_MATMUL, quantize_dynamic, scale_rows
    from edgeml.calibration.targets import get_target, judging_runtime
    from edgeml.runtimes.onnxrt import OnnxRuntime
    from edgeml.validate import row_cosines

    plain, rows = tmp_path / "plain.onnx", tmp_path / "rows.onnx"
    _outlier_model(plain)
    found = scale_rows(plain, rows, _tokens_with_outliers(1))  # found on other samples than those judged
    assert found == {"scaled_groups": 1, "outlier_channels": 1, "nan_guards_dropped": 0}
    calm = tmp_path / "calm.onnx"  # no outlier channel: the group is left as it is (the rewrite costs time)
    calm_tokens = {"x": _tokens_with_outliers(1)["x"] / np.array([1] * 3 + [30] + [1] * 12, np.float32)}
    assert scale_rows(plain, calm, calm_tokens)["scaled_groups"] == 0
    assert [n.op_type for n in __import__("onnx").load(str(calm)).graph.node] == ["MatMul", "Add"]
    feeds = _tokens_with_outliers(2)
    with OnnxRuntime(plain) as a, OnnxRuntime(rows) as b:
        expected = a.run(feeds)["y"]
        np.testing.assert_allclose(b.run(feeds)["y"], expected, rtol=1e-5, atol=1e-5)
    lowest = {}
    for model in (plain, rows):
        quantized = tmp_path / f"{model.stem}_int8.onnx"
        quantize_dynamic(model, get_target("x86-vnni"), quantized)
        with judging_runtime(quantized) as runtime:
            got = runtime.run(feeds)["y"]
        tokens = (expected.reshape(-1, 8), got.reshape(-1, 8))
        lowest[model.stem] = float(np.min(row_cosines(*tokens, None)))
    assert any(n.name.endswith(OUTLIER_MATMUL) and n.op_type == "MatMul"  # the outlier channel stays FP32
               for n in __import__("onnx").load(str(tmp_path / "rows_int8.onnx")).graph.node)
    assert lowest["rows"] > 0.999 and lowest["plain"] < 0.99, lowest


def _guarded_softmax(path, fill):
    """scores + Where(mask, 0, fill) -> Softmax -> Where(IsNaN(p), 0, p): torch's SDPA export in miniature."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    constants = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("zero", 0.0), ("fill", fill))]
    graph = helper.make_graph(
        [helper.make_node("Where", ["mask", "zero", "fill"], ["bias"]), helper.make_node("Add", ["s", "bias"], ["m"]),
         helper.make_node("Softmax", ["m"], ["p"], axis=-1), helper.make_node("IsNaN", ["p"], ["nan"]),
         helper.make_node("Where", ["nan", "zero", "p"], ["q"]), helper.make_node("Identity", ["q"], ["y"])],
        "guard", [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["n", 6]),
                  helper.make_tensor_value_info("mask", TensorProto.BOOL, ["n", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])], constants)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_softmax_nan_guard_is_dropped_only_with_a_finite_mask_fill(tmp_path):
    """With a finite fill (finfo.min) the Softmax is never NaN: the guard goes, outputs stay identical; with
    -inf a fully masked row is NaN without it, so it stays."""
    import onnx

    from edgeml.calibration.quantize import scale_rows
    from edgeml.runtimes.onnxrt import OnnxRuntime

    rng = np.random.default_rng(0)
    feeds = {"s": rng.normal(size=(5, 6)).astype(np.float32), "mask": rng.random((5, 6)) > 0.3}
    feeds["mask"][0] = False  # a fully masked row
    for fill, dropped in ((np.finfo(np.float32).min, 1), (-np.inf, 0)):
        guarded, out = tmp_path / f"guarded{dropped}.onnx", tmp_path / f"out{dropped}.onnx"
        _guarded_softmax(guarded, fill)
        assert scale_rows(guarded, out, feeds)["nan_guards_dropped"] == dropped
        assert ("IsNaN" in {n.op_type for n in onnx.load(str(out)).graph.node}) == (not dropped)
        with OnnxRuntime(guarded) as a, OnnxRuntime(out) as b:
            np.testing.assert_array_equal(b.run(feeds)["y"], a.run(feeds)["y"])


def test_one_value_a_sample_is_judged_on_its_column():
    """A regression head gives one value a sample, whose own cosine is +-1 whatever its error: the lowest
    per-sample cosine falls back to the cosine of the whole column, which an error does move."""
    from edgeml.validate import compare_outputs

    scores = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    off = scores + np.where(np.arange(32) % 2, 0.5, -0.5).astype(np.float32)[:, None]
    exact = compare_outputs({"y": scores}, {"y": scores}, 32, precision="int8").outputs[0]
    wrong = compare_outputs({"y": scores}, {"y": off}, 32, precision="int8").outputs[0]
    assert exact.min_row_cosine == pytest.approx(1.0) and wrong.min_row_cosine < 0.9
    assert wrong.min_row_cosine == pytest.approx(wrong.cosine)
