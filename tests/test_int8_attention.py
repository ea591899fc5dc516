"""Dynamic INT8 of fused transformer graphs: onnxruntime's Attention ops become QAttention only through
``prepare_attention``, which must compute the same FP32 model, keep the padding mask, and smooth the inputs;
an Attention that would lose its mask in onnxruntime's quantizer is never quantized."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgeml
from edgeml.calibration.quantize import preprocess, prepare_attention, quantize_dynamic
from edgeml.calibration.targets import get_target, judging_runtime
from edgeml.runtimes.onnxrt import OnnxRuntime
from edgeml.validate import row_cosines, valid_positions

from .conftest import make_tiny_bert

pytest.importorskip("transformers")
pytest.importorskip("onnxscript")


def _tokens(tokenizer_file, sentences, length=None) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_padding(length=length)
    tokenizer.enable_truncation(128)
    encoded = tokenizer.encode_batch(sentences)
    return {"input_ids": np.array([e.ids for e in encoded], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], np.int64)}


@pytest.fixture(scope="module")
def biased_bert(tmp_path_factory, minilm_dir):
    """A tiny BERT with trained-like (nonzero) biases, which onnxruntime's fusions turn into Attention ops."""
    return make_tiny_bert(tmp_path_factory.mktemp("biased-bert"), "BertModel", minilm_dir, biases=True)


@pytest.fixture(scope="module")
def fused(biased_bert, sentences, tmp_path_factory):
    """The tiny BERT as edgeml builds it (fused for onnxruntime), pre-processed for quantization, and two sets
    of padded inputs: a probe to fit on, and other sentences to judge on."""
    out = tmp_path_factory.mktemp("fused")
    artifact = edgeml.convert(biased_bert, output_dir=out, check=False).artifacts[0]
    assert artifact.record["fusion"]["fused"].get("Attention") == 2
    model = out / "pre.onnx"
    preprocess(artifact.path, model)
    tokenizer = biased_bert / "tokenizer.json"
    probe, judged = _tokens(tokenizer, sentences[:16]), _tokens(tokenizer, sentences[16:])
    assert probe["attention_mask"].min() == 0 and judged["attention_mask"].min() == 0  # both padded
    return model, probe, judged


def _attention(path) -> list:
    return [n for n in onnx.load(str(path)).graph.node if n.op_type in ("Attention", "QAttention")]


def test_rewrite_is_exact_and_feeds_the_mask_to_qattention(fused, tmp_path):
    model, probe, judged = fused
    before = _attention(model)
    assert before and all(len(n.input) > 5 and n.input[5] for n in before)  # the mask comes as an attention bias
    record = prepare_attention(model, tmp_path / "prepared.onnx", probe, "attention_mask")
    assert sorted(record["quantizable"]) == sorted(n.name for n in before) and record["unsafe"] == []
    after = _attention(tmp_path / "prepared.onnx")
    assert all(n.input[3] and (len(n.input) < 6 or not n.input[5]) for n in after)  # mask_index, no bias
    assert not any(a.name == "qkv_hidden_sizes" for n in after for a in n.attribute)
    with OnnxRuntime(model) as original, OnnxRuntime(tmp_path / "prepared.onnx") as prepared:
        expected, got = original.run(judged), prepared.run(judged)  # other sentences than the probe's
    # exact, padding included: without its mask this model's states move by 0.017 (4e-3 of their range)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4)

    quantize_dynamic(tmp_path / "prepared.onnx", get_target("x86-vnni"), tmp_path / "int8.onnx")
    quantized = _attention(tmp_path / "int8.onnx")
    assert [n.op_type for n in quantized] == ["QAttention"] * len(before)
    assert {n.input[5] for n in quantized} == {"attention_mask.mask_index"}  # QAttention's mask_index input
    with judging_runtime(tmp_path / "int8.onnx") as int8:
        states = int8.run(judged)["last_hidden_state"]
    mask = judged["attention_mask"].astype(bool)
    cosines = row_cosines(expected["last_hidden_state"], states, valid_positions(states.shape, (mask, (0, 1))))
    assert cosines.min() > 0.999


def test_attention_with_a_bias_is_never_quantized_as_it_is(fused, tmp_path):
    """onnxruntime's quantizer turns an Attention into QAttention and drops its attention bias (the mask)
    without a word: unprepared, such nodes stay FP32 and keep their bias."""
    model, _, _ = fused
    quantize_dynamic(model, get_target("x86-vnni"), tmp_path / "int8.onnx")
    kept = _attention(tmp_path / "int8.onnx")
    assert kept and all(n.op_type == "Attention" and n.input[5] for n in kept)


def test_without_a_mask_input_nothing_that_needs_one_is_rewritten(fused, tmp_path):
    model, probe, _ = fused
    record = prepare_attention(model, tmp_path / "prepared.onnx", probe, None)
    assert record["quantizable"] == [] and "reason" in record and not (tmp_path / "prepared.onnx").exists()
    assert len(record["unsafe"]) == len(_attention(model))


def test_convert_quantizes_the_fused_graph_with_qattention(biased_bert, tmp_path):
    """Dynamic INT8 starts from the fused artifact (not the unfused graph) and records how attention runs."""
    from edgeml.calibration.int8 import Int8Options
    from tests.conftest import SENTENCES_FILE

    result = edgeml.convert(biased_bert, output_dir=tmp_path, data=str(SENTENCES_FILE),
                            int8=Int8Options(target="x86-vnni", min_cosine=0.95))
    report = result.artifacts[1].record["quantization"]
    ops = {n.op_type for n in onnx.load(str(result.artifacts[1].path)).graph.node}
    assert {"QAttention", "SkipLayerNormalization"} <= ops and "Attention" not in ops
    assert report["recipe"]["attention"].startswith("2 fused Attention op(s) as QAttention")
    assert report["accuracy"]["passed"]


def test_attention_that_cannot_be_prepared_is_quantized_from_the_unfused_graph(biased_bert, tmp_path, monkeypatch):
    """When the rewrite is refused (here: forced), the Q/K/V MatMuls of the graph before fusion are
    quantized instead of leaving the fused Attention, and its projections, in FP32."""
    from edgeml.calibration import int8 as int8_module
    from edgeml.calibration.int8 import Int8Options
    from tests.conftest import SENTENCES_FILE

    def refuse(model, out, probe, mask_input):
        return {"attention_nodes": 2, "quantizable": [], "unsafe": [], "reason": "refused by the test"}

    monkeypatch.setattr(int8_module, "prepare_attention", refuse)
    result = edgeml.convert(biased_bert, output_dir=tmp_path, data=str(SENTENCES_FILE),
                            int8=Int8Options(target="x86-vnni", min_cosine=0.95))
    report = result.artifacts[1].record["quantization"]
    ops = [n.op_type for n in onnx.load(str(result.artifacts[1].path)).graph.node]
    assert "Attention" not in ops and "QAttention" not in ops
    assert ops.count("MatMulInteger") >= 2 * 6  # Q, K, V, output and two feed-forward MatMuls a layer
    assert any("refused by the test (quantizing the graph before fusion instead)" in n for n in report["notes"])


def test_qattention_weights_follow_the_target_bits(fused, tmp_path):
    """x86 (the default) stores 7-bit weights, so AVX2's int16 pair sums cannot saturate; x86-vnni 8-bit."""
    from onnx import numpy_helper

    model, probe, _ = fused
    prepare_attention(model, tmp_path / "prepared.onnx", probe, "attention_mask")
    for target, largest in (("x86", 64), ("x86-vnni", 127)):
        quantize_dynamic(tmp_path / "prepared.onnx", get_target(target), tmp_path / f"{target}.onnx")
        graph = onnx.load(str(tmp_path / f"{target}.onnx")).graph
        values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        weights = [values[n.input[1]] for n in graph.node if n.op_type == "QAttention"]
        assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) == largest


def _shared_weight_attention(path):
    """Two Attention layers reading one weight (as ALBERT shares its layers), their padding mask given as an
    additive attention bias (0 on real tokens, -10000 on padding), input channel 3 an outlier."""
    from onnx import TensorProto, helper, numpy_helper

    rng, hidden = np.random.default_rng(0), 16
    constants = {"axes": np.array([1, 2], np.int64), "one": np.array(1, np.float32), "i1": np.array([1], np.int64),
                 "ones": np.array([1, 1], np.int64), "last": np.array([1], np.int64),
                 "fill": np.array(-10000, np.float32), "W": rng.standard_normal((hidden, 3 * hidden)).astype(np.float32),
                 "b": rng.standard_normal(3 * hidden).astype(np.float32) * 0.1}
    nodes = [helper.make_node("Unsqueeze", ["attention_mask", "axes"], ["m4"], name="unsqueeze"),
             helper.make_node("Cast", ["m4"], ["m4f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Sub", ["one", "m4f"], ["padding"], name="sub"),
             helper.make_node("Mul", ["padding", "fill"], ["keys"], name="mul"),  # (batch, 1, 1, sequence)
             helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "i1"], ["length"], axis=0, name="length"),
             helper.make_node("Concat", ["ones", "length", "last"], ["square"], axis=0, name="square"),
             helper.make_node("Expand", ["keys", "square"], ["bias"], name="expand")]  # (batch, 1, sequence, sequence)
    current = "x"
    for layer in range(2):
        nodes += [helper.make_node("Attention", [current, "W", "b", "", "", "bias"], [f"a{layer}"],
                                   domain="com.microsoft", num_heads=2, name=f"attention{layer}"),
                  helper.make_node("Add", [f"a{layer}", current], [f"r{layer}"], name=f"residual{layer}")]
        current = f"r{layer}"
    graph = helper.make_graph(
        nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", hidden]),
                          helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["batch", "sequence", hidden])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]),
              str(path))


def _padded(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 6, 16)).astype(np.float32)
    x[..., 3] *= 20
    mask = np.ones((4, 6), np.int64)
    for row in range(1, 4):
        mask[row, 6 - row:] = 0
    return {"x": x, "attention_mask": mask}


def test_a_weight_shared_by_layers_is_smoothed_once(tmp_path):
    _shared_weight_attention(tmp_path / "shared.onnx")
    record = prepare_attention(tmp_path / "shared.onnx", tmp_path / "prepared.onnx", _padded(1), "attention_mask")
    assert sorted(record["quantizable"]) == ["attention0", "attention1"]
    graph = onnx.load(str(tmp_path / "prepared.onnx")).graph
    assert [i.name for i in graph.initializer if i.name.startswith("W")] == ["W.smoothed", "W.smoothing"]  # one copy
    with OnnxRuntime(tmp_path / "shared.onnx") as original, OnnxRuntime(tmp_path / "prepared.onnx") as prepared:
        judged = _padded(2)
        np.testing.assert_allclose(prepared.run(judged)["r1"], original.run(judged)["r1"], rtol=1e-4, atol=1e-3)
    quantize_dynamic(tmp_path / "prepared.onnx", get_target("x86"), tmp_path / "int8.onnx")
    assert [n.op_type for n in _attention(tmp_path / "int8.onnx")] == ["QAttention"] * 2
