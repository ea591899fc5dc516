"""Hugging Face folders as a convert source: named inputs and outputs, metadata, tokenizer, fusion, refusals."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeml
from edgeml.errors import BackendMissing, EdgeMLError, InputError, UnsafeFormatError
from edgeml.manifest import MANIFEST_NAME
from edgeml.model_meta import read_meta
from edgeml.verification import verify
from tests.conftest import make_tiny_bert

pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")


def dims(values) -> dict[str, list]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


@pytest.fixture(scope="module")
def minilm_build(minilm_dir, tmp_path_factory):
    """The real MiniLM folder converted once, from an empty current folder (which must stay empty)."""
    cwd, out = tmp_path_factory.mktemp("cwd"), tmp_path_factory.mktemp("minilm-build") / "out"
    notes = []
    before = _listing(minilm_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        result = edgeml.convert(minilm_dir, output_dir=out, progress=notes.append)
    assert _listing(minilm_dir) == before  # nothing written beside the user's files
    return result, sorted(p.name for p in cwd.iterdir()), notes


def _listing(folder) -> list:
    return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in Path(folder).rglob("*"))


def test_minilm_folder_converts_with_names_metadata_and_tokenizer(minilm_build, minilm_dir):
    result, cwd_left, notes = minilm_build
    out = result.onnx.parent
    assert cwd_left == []  # no litter in the current folder
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, "all-MiniLM-L6-v2.onnx",
                                                            "all-MiniLM-L6-v2.tokenizer.json"])
    model = onnx.load(str(result.onnx))
    assert dims(model.graph.input) == {n: ["batch", "sequence"] for n in ("input_ids", "attention_mask", "token_type_ids")}
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.INT64 for v in model.graph.input)
    assert dims(model.graph.output) == {"last_hidden_state": ["batch", "sequence", 384], "sentence_embedding": ["batch", 384]}
    meta = read_meta(model)
    assert meta.task == "feature-extraction" and meta.labels is None
    assert meta.tokenizer == "all-MiniLM-L6-v2.tokenizer.json"
    assert meta.roles == {"input_ids": "token_ids", "attention_mask": "attention_mask", "token_type_ids": "token_type_ids"}
    assert meta.vocab == {"input_ids": 30522, "token_type_ids": 2}
    assert meta.dim_max == {"sequence": 512} and meta.max_length == 256  # sentence_bert_config's max_seq_length
    assert (out / meta.tokenizer).read_bytes() == (Path(minilm_dir) / "tokenizer.json").read_bytes()
    entry = json.loads((out / MANIFEST_NAME).read_text())["artifacts"][0]
    assert [c["file"] for c in entry["companions"]] == [meta.tokenizer]
    assert result.artifacts[0].check.passed
    # Fused for onnxruntime, and recorded as such.
    ops = {n.op_type for n in model.graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    assert entry["build"]["fusion"]["applied"] and entry["build"]["fusion"]["fused"]["Attention"] == 6
    assert any("fused for onnxruntime" in n for n in notes)


@pytest.fixture(scope="module")
def minilm_reference(minilm_build, minilm_dir, sentences):
    """The real sentences, padded to the longest, and PyTorch's sentence embeddings of them: the masked mean
    of BertModel's states, L2-normalised, as sentence-transformers computes it."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    result = minilm_build[0]
    tokenizer = Tokenizer.from_file(str(result.onnx.parent / read_meta(onnx.load(str(result.onnx))).tokenizer))
    tokenizer.enable_padding()
    tokenizer.enable_truncation(256)
    encoded = tokenizer.encode_batch(sentences)
    feeds = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
             "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
             "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64)}
    assert feeds["attention_mask"].min() == 0  # padded: pooling must ignore the padding
    with torch.inference_mode():
        hidden = AutoModel.from_pretrained(minilm_dir).eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()})[0]
        mask = torch.from_numpy(feeds["attention_mask"]).unsqueeze(-1).float()
        reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    return feeds, reference


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_minilm_sentence_embedding_matches_torch_mean_pooling(minilm_build, minilm_reference, sentences):
    """The in-graph Pooling + Normalize against plain torch (mean over real tokens, L2-normalised)."""
    from edgeml.runtimes.onnxrt import OnnxRuntime

    feeds, reference = minilm_reference
    with OnnxRuntime(minilm_build[0].onnx) as runtime:
        embedding = runtime.run(feeds)["sentence_embedding"]
    assert len(sentences) >= 64 and _cosines(embedding, reference).min() > 0.9999


def test_minilm_int8_meets_the_accuracy_and_size_targets(minilm_build, minilm_reference, tmp_path):
    """Dynamic INT8 for x86-vnni, judged on the real sentences: attention in int8 (QAttention), under 30 MB,
    and every sentence's embedding, each run alone as an app runs it, at cosine >= 0.99 against PyTorch.
    It runs with exact integer arithmetic, so the figures hold on any CPU."""
    from collections import Counter

    from edgeml.calibration.int8 import Int8Options, build_int8
    from edgeml.calibration.targets import judging_runtime
    from edgeml.spec import TensorSpec
    from tests.conftest import SENTENCES_FILE

    result, int8 = minilm_build[0], tmp_path / "m.int8.onnx"
    specs = [TensorSpec.from_dict(s) for s in result.artifacts[0].info["inputs"]]
    report = build_int8(result.onnx, int8, specs, Int8Options(target="x86-vnni", eval_data=str(SENTENCES_FILE)),
                        lambda message: None)
    assert report["accuracy"]["passed"] and "QAttention" in report["recipe"]["attention"]
    assert Counter(n.op_type for n in onnx.load(str(int8)).graph.node)["QAttention"] == 6
    assert int8.stat().st_size < 30e6
    feeds, reference = minilm_reference
    lengths = feeds["attention_mask"].sum(axis=1)
    with judging_runtime(int8) as runtime:
        embedding = np.concatenate([runtime.run({k: v[i:i + 1, :n] for k, v in feeds.items()})["sentence_embedding"]
                                    for i, n in enumerate(lengths)])
    assert _cosines(embedding, reference).min() >= 0.99


def test_tokenizer_is_verified_and_goes_with_its_artifact(minilm_build, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(minilm_build[0].onnx.parent, out)
    assert verify(out).ok
    tokenizer = out / "all-MiniLM-L6-v2.tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace("[UNK]", "[UNX]", 1))
    result = verify(out)
    assert not result.ok and any("all-MiniLM-L6-v2.tokenizer.json" in p and "sha256" in p for p in result.problems)
    tokenizer.unlink()
    assert any("tokenizer.json: listed" in p and "missing" in p for p in verify(out).problems)
    from edgeml.manifest import remove_artifact

    shutil.copy(minilm_build[0].onnx.parent / tokenizer.name, tokenizer)
    remove_artifact(out / "all-MiniLM-L6-v2.onnx")  # the tokenizer goes with the last artifact that lists it
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]


def test_classifier_folder_exports_logits_and_labels(tiny_bert_classifier_dir, tmp_path):
    result = edgeml.convert(tiny_bert_classifier_dir, output_dir=tmp_path / "out", name="cls", fuse=False,
                            shapes={"sequence": 16})
    model = onnx.load(str(result.onnx))
    assert dims(model.graph.output) == {"logits": ["batch", 3]}
    assert not any(n.domain == "com.microsoft" for n in model.graph.node)  # fuse=False: plain ONNX
    meta = read_meta(model)
    assert (meta.task, meta.labels, meta.tokenizer) == ("text-classification", ["negative", "neutral", "positive"],
                                                        "cls.tokenizer.json")
    assert meta.dim_max == {"sequence": 128}
    assert "sequence=16" in result.artifacts[0].check.to_dict()["inputs_from"]
    assert verify(tmp_path / "out").ok


def test_token_classification_and_task_override(tmp_path, minilm_dir):
    from edgeml.sources import load_source, reference

    folder = make_tiny_bert(tmp_path / "tok", "BertForTokenClassification", minilm_dir)
    source = load_source(folder)
    assert source.meta.task == "token-classification" and source.meta.labels == ["negative", "neutral", "positive"]
    with reference(source) as runtime:
        assert [o.name for o in runtime.outputs] == ["logits"] and runtime.outputs[0].shape[-1] == 3
    # Its encoder alone, on request.
    encoder = load_source(folder, task="feature-extraction")
    assert encoder.meta.task == "feature-extraction" and encoder.meta.labels is None
    with pytest.raises(InputError, match="not a token-classification model"):
        load_source(make_tiny_bert(tmp_path / "plain", "BertModel"), task="token-classification")
    with pytest.raises(InputError, match="not a regression model"):
        load_source(folder, task="regression")


def _refused(model, out: Path, **options) -> str:
    with pytest.raises(EdgeMLError) as error:
        edgeml.convert(model, output_dir=out, **options)
    assert not out.exists()
    message = str(error.value)
    assert "\n" not in message
    return message


def test_interrupted_convert_leaves_nothing(tmp_path, tiny_bert_dir, monkeypatch):
    """Ctrl-C while the built artifact and its tokenizer sit in the private folder: both go, nothing else is left."""
    from onnx import TensorProto, helper

    import edgeml.pipeline as pipeline
    from edgeml.sources import FRAMEWORKS

    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["last_hidden_state"], to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
         for n in ("input_ids", "attention_mask", "token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence"])])
    staged = []

    def interrupted(source, artifact, *args):
        staged.extend(sorted(p.name for p in artifact.parent.iterdir()))
        raise KeyboardInterrupt

    torch_framework = dataclasses.replace(FRAMEWORKS["torch"],
                                          export=lambda source, opset: (helper.make_model(graph), {"exporter": "test"}))
    monkeypatch.setitem(FRAMEWORKS, "torch", torch_framework)
    monkeypatch.setattr(pipeline, "_check", interrupted)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        edgeml.convert(tiny_bert_dir, output_dir=tmp_path / "out", name="m")
    assert staged == ["m.onnx", "m.tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any((tmp_path / "out").iterdir())


def test_bad_folders_are_refused_with_nothing_written(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "without config.json" in _refused(empty, out)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_bert_dir / "config.json", no_weights / "config.json")
    assert "no weights" in _refused(no_weights, out) and "save_pretrained" in _refused(no_weights, out)
    unknown = shutil.copytree(tiny_bert_dir, tmp_path / "unknown")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "no-such-model"}))
    assert "cannot read" in _refused(unknown, out) and "config.json" in _refused(unknown, out)
    mismatched = shutil.copytree(tiny_bert_dir, tmp_path / "mismatched")
    (mismatched / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))
    message = _refused(mismatched, out)
    assert "tokenizer.json has 30522 tokens" in message and "vocab_size" in message
    assert "unknown --task" in _refused(tiny_bert_dir, out, task="summarization")
    assert "--shape" in _refused(tiny_bert_dir, out, shapes={"height": 4})
    assert "beyond the model's largest sequence, 128" in _refused(tiny_bert_dir, out, shapes={"sequence": 129})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mismatched", "no-weights", "unknown"]


def test_remote_code_needs_trust(tmp_path, tiny_bert_dir):
    folder = shutil.copytree(tiny_bert_dir, tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_x.XModel"}}))
    with pytest.raises(UnsafeFormatError, match="trust-remote-code"):
        edgeml.convert(folder, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_transformers_says_which_extra(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(BackendMissing, match=r"pip install 'edgeml\[hf\]'") as error:
        edgeml.convert(tiny_bert_dir, output_dir=tmp_path / "out")
    assert error.value.exit_code == 3 and not (tmp_path / "out").exists()


class _Payload:
    """Unpickling this writes a file: the proof that a loader ran code from a pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pickle code ran"))


def test_pytorch_model_bin_loads_as_weights_only(tmp_path, tiny_bert_dir):
    """The older weight file loads with weights_only=True and computes what the safetensors one does."""
    import torch
    from safetensors.torch import load_file

    from edgeml.sources import load_source, reference

    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(tiny_bert_dir / "config.json", folder / "config.json")
    torch.save(load_file(tiny_bert_dir / "model.safetensors"), folder / "pytorch_model.bin")
    source, original = load_source(folder), load_source(tiny_bert_dir)
    assert "pytorch_model.bin" in source.format and source.tokenizer is None
    assert any("no tokenizer.json" in note for note in source.notes)
    feeds = {"input_ids": np.array([[101, 2023, 2003, 102]]), "attention_mask": np.ones((1, 4), np.int64),
             "token_type_ids": np.zeros((1, 4), np.int64)}
    with reference(source) as a, reference(original) as b:
        np.testing.assert_allclose(a.run(feeds)["last_hidden_state"], b.run(feeds)["last_hidden_state"], atol=1e-6)
    # A pickle that would run code when loaded is refused, and the code never runs.
    marker = tmp_path / "ran"
    torch.save({"weights": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="cannot load"):
        load_source(folder)
    assert not marker.exists()
    with pytest.raises(InputError, match="convert the folder"):
        load_source(tiny_bert_dir / "model.safetensors")


def test_companions_follow_the_entries_that_list_them(tmp_path):
    """A tokenizer shared by the FP32 and INT8 entries stays while one lists it; new bytes unlist the other."""
    from onnx import TensorProto, helper

    from edgeml.files import sha256
    from edgeml.manifest import install, read_manifest, remove_artifact

    out = tmp_path / "out"
    out.mkdir()

    def built(name: str, tokenizer: bytes | None = None) -> tuple[Path, dict, dict]:
        staging = tmp_path / f"staging-{len(list(tmp_path.iterdir()))}"
        staging.mkdir()
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        onnx.save(helper.make_model(graph), staging / name)
        companions = {}
        if tokenizer is not None:
            (staging / "m.tokenizer.json").write_bytes(tokenizer)
            companions["m.tokenizer.json"] = staging / "m.tokenizer.json"
        entry = {"file": name, "sha256": sha256(staging / name), "size_bytes": (staging / name).stat().st_size}
        return staging / name, entry, companions

    onnx_file, entry, companions = built("m.onnx", b'{"v": 1}')
    install(onnx_file, out / "m.onnx", entry, companions)
    int8_file, int8_entry, _ = built("m.int8.onnx")
    install(int8_file, out / "m.int8.onnx", int8_entry, {"m.tokenizer.json": out / "m.tokenizer.json"})
    assert verify(out).ok and len(verify(out).verified) == 2
    remove_artifact(out / "m.int8.onnx")
    assert (out / "m.tokenizer.json").exists() and verify(out).ok  # still needed by m.onnx
    int8_file, int8_entry, _ = built("m.int8.onnx")
    install(int8_file, out / "m.int8.onnx", int8_entry, {"m.tokenizer.json": out / "m.tokenizer.json"})
    onnx_file, entry, companions = built("m.onnx", b'{"v": 2}')
    install(onnx_file, out / "m.onnx", entry, companions)  # another tokenizer: the INT8 entry built with the old goes
    assert [e["file"] for e in read_manifest(out)["artifacts"]] == ["m.onnx"]
    assert (out / "m.tokenizer.json").read_bytes() == b'{"v": 2}'
    assert any("m.int8.onnx: not in" in p for p in verify(out).problems)
    (out / "m.int8.onnx").unlink()
    remove_artifact(out / "m.onnx")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]


@pytest.mark.parametrize("modes, normalize", [(("cls_token",), False), (("max_tokens", "mean_tokens"), True)])
def test_sentence_transformers_pooling_modes(tmp_path, tiny_bert_dir, modes, normalize):
    """Pooling read from 1_Pooling/config.json (concatenated in sentence-transformers' order), Normalize if listed."""
    import torch

    from edgeml.sources import load_source, reference

    folder = shutil.copytree(tiny_bert_dir, tmp_path / "st")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({f"pooling_mode_{m}": True for m in modes}))
    feeds = {"input_ids": np.array([[101, 2023, 2003, 102], [101, 7592, 102, 0]]),
             "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]]), "token_type_ids": np.zeros((2, 4), np.int64)}
    with reference(load_source(folder)) as runtime:
        out = runtime.run(feeds)
    hidden, mask = torch.from_numpy(out["last_hidden_state"]), torch.from_numpy(feeds["attention_mask"])
    if modes == ("cls_token",):
        expected = hidden[:, 0]
    else:
        real = mask.unsqueeze(-1).bool()
        maxed = torch.stack([hidden[i][real[i, :, 0]].max(0).values for i in range(2)])
        mean = (hidden * real).sum(1) / real.sum(1)
        expected = torch.nn.functional.normalize(torch.cat([maxed, mean], 1), dim=1)
    np.testing.assert_allclose(out["sentence_embedding"], expected.numpy(), atol=1e-5)


def test_a_fusion_onnxruntime_cannot_load_is_dropped(tmp_path):
    """onnxscript's fusions leave GPT-2's Gemm with rank-3 inputs, which onnxruntime refuses: the artifact is
    the unfused graph, checked, and the record says why."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    folder = tmp_path / "gpt2"
    transformers.GPT2Model(config).eval().save_pretrained(folder)
    result = edgeml.convert(folder, output_dir=tmp_path / "out")
    fusion = result.artifacts[0].record["fusion"]
    assert not fusion["applied"] and "onnxruntime cannot load the fused graph" in fusion["reason"]
    assert result.artifacts[0].check.passed


def test_sentences_check_and_judge_int8_and_calibrate(tmp_path, tiny_bert_dir):
    """A .txt of sentences is real data everywhere: the FP32 check, the INT8 gate (from --data) and static
    calibration, each tokenized by the model's own tokenizer."""
    from edgeml.calibration.int8 import Int8Options
    from tests.conftest import SENTENCES_FILE

    dynamic = edgeml.convert(tiny_bert_dir, output_dir=tmp_path / "dyn", data=str(SENTENCES_FILE), fuse=False,
                             int8=Int8Options(target="x86-vnni", min_cosine=0.9))
    fp32, int8 = dynamic.artifacts
    assert fp32.check.samples == 66 and fp32.check.inputs["origin"].endswith("sentences.txt")
    report = int8.record["quantization"]
    assert report["evaluation_data"] == "eval_data" and report["accuracy"]["samples"] == 66
    from edgeml.calibration.int8 import build_int8
    from edgeml.spec import TensorSpec

    specs = [TensorSpec.from_dict(s) for s in fp32.info["inputs"]]  # static, from the built FP32 (its tokenizer)
    report = build_int8(fp32.path, tmp_path / "static.onnx", specs,
                        Int8Options(calib=str(SENTENCES_FILE), calib_samples=32, eval_samples=16, min_cosine=0.5),
                        lambda message: None)
    assert report["calibration_samples"] == 32 and report["accuracy"]["samples"] == 16


def test_an_artifact_converted_again_keeps_its_tokenizer(tmp_path, tiny_bert_dir, sentences):
    """An edgeml .onnx as the source: the tokenizer its metadata names comes along, so encode() still works."""
    first = edgeml.convert(tiny_bert_dir, output_dir=tmp_path / "a", name="bert", fuse=False).artifacts[0]
    again = edgeml.convert(first.path, output_dir=tmp_path / "b", name="again").artifacts[0]
    meta = read_meta(onnx.load(str(again.path)))
    assert meta.tokenizer == "again.tokenizer.json" and (tmp_path / "b" / meta.tokenizer).is_file()
    with edgeml.load(first.path) as a, edgeml.load(again.path) as b:
        np.testing.assert_allclose(a.encode(sentences[:4]), b.encode(sentences[:4]), atol=1e-6)
    assert verify(tmp_path / "b").ok
