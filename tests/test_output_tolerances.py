"""Per-output tolerances: one number for every output, or some outputs by name, composed with the precision's
defaults; an unknown name is refused naming the outputs that exist; every check records what it used."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml.cli import main
from edgeml.errors import InputError
from edgeml.validate import TOLERANCES, compare_outputs


def _outputs(off: float = 5e-4):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 4)).astype(np.float32)
    hidden = rng.normal(size=(8, 6)).astype(np.float32)
    expected = {"logits": logits, "hidden": hidden}
    got = {"logits": logits + np.float32(off), "hidden": hidden.copy()}
    return expected, got


def test_a_named_tolerance_applies_to_that_output_only():
    expected, got = _outputs()
    assert not compare_outputs(expected, got, 8).passed  # 5e-4 off is over fp32's 1e-4
    result = compare_outputs(expected, got, 8, atol={"logits": 1e-3})
    assert result.passed, result.summary()
    by_name = {o.name: o for o in result.outputs}
    fp32_atol, fp32_rtol, _ = TOLERANCES["fp32"]
    assert (by_name["logits"].atol, by_name["logits"].rtol) == (1e-3, fp32_rtol)
    assert (by_name["hidden"].atol, by_name["hidden"].rtol) == (fp32_atol, fp32_rtol)
    assert (result.atol, result.rtol) == (fp32_atol, fp32_rtol)  # what every output not named was judged with
    assert "logits atol 0.001, rtol 0.001" in result.summary()
    assert result.to_dict()["outputs"][0]["atol"] == 1e-3
    # the other output is still judged at the default: 5e-4 off there fails
    got["hidden"] += np.float32(5e-4)
    failed = compare_outputs(expected, got, 8, atol={"logits": 1e-3})
    assert not failed.passed and [o.name for o in failed.outputs if not o.passed] == ["hidden"]


def test_named_tolerances_compose_with_the_precision_defaults():
    expected, got = _outputs(off=5e-3)
    fp16_atol, fp16_rtol, _ = TOLERANCES["fp16"]
    assert compare_outputs(expected, got, 8, precision="fp16").passed  # within fp16's 1e-2
    result = compare_outputs(expected, got, 8, precision="fp16", atol={"logits": 1e-4}, rtol={"logits": 0.0})
    by_name = {o.name: o for o in result.outputs}
    assert not by_name["logits"].passed and (by_name["logits"].atol, by_name["logits"].rtol) == (1e-4, 0.0)
    assert (by_name["hidden"].atol, by_name["hidden"].rtol) == (fp16_atol, fp16_rtol)
    one = compare_outputs(expected, got, 8, precision="int8", atol=1e-6)  # one number: every output, rtol at int8's
    assert {(o.atol, o.rtol) for o in one.outputs} == {(1e-6, TOLERANCES["int8"][1])}


def test_outputs_paired_by_position_take_either_name():
    expected, got = _outputs()
    renamed = {"output_0": expected["logits"], "output_1": expected["hidden"]}  # a torch source's names
    assert compare_outputs(renamed, got, 8, atol={"logits": 1e-3}).passed
    assert compare_outputs(renamed, got, 8, atol={"output_0": 1e-3}).passed


def test_an_unknown_output_name_is_refused_naming_the_outputs():
    expected, got = _outputs()
    with pytest.raises(InputError, match=r"atol names no output 'logit'; the model's outputs are logits, hidden: "
                                         r"give NAME=VALUE"):
        compare_outputs(expected, got, 8, atol={"logit": 1e-3})
    with pytest.raises(InputError, match=r"tolerances must be >= 0 and finite, got rtol of 'logits' nan"):
        compare_outputs(expected, got, 8, rtol={"logits": float("nan")})


def _two_outputs(path):
    """An ONNX model with outputs 'logits' and 'probabilities'."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", ["x"], ["logits"]), helper.make_node("Softmax", ["x"], ["probabilities"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3])
                               for n in ("logits", "probabilities")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_convert_records_the_tolerance_of_each_output(tmp_path):
    model = _two_outputs(tmp_path / "two.onnx")
    result = edgeml.convert(model, "onnx", tmp_path / "build", atol={"logits": 1e-3})
    manifest = json.loads(result.manifest.read_text())
    outputs = {o["name"]: o for o in manifest["artifacts"][0]["check"]["outputs"]}
    assert outputs["logits"]["atol"] == 1e-3 and outputs["probabilities"]["atol"] == TOLERANCES["fp32"][0]


def test_convert_refuses_an_unknown_output_name(tmp_path):
    model = _two_outputs(tmp_path / "two.onnx")
    # the user's mistake, said as such: not "failed on generated inputs"
    with pytest.raises(InputError, match="^atol names no output 'logit'; the model's outputs are logits, probabilities"):
        edgeml.convert(model, "onnx", tmp_path / "build", atol={"logit": 1e-3})
    assert not (tmp_path / "build" / "two.onnx").exists()


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_takes_one_number_or_name_value_pairs(tmp_path):
    model = _two_outputs(tmp_path / "two.onnx")
    code, out = _cli("convert", model, "-o", tmp_path / "a", "--atol", "logits=1e-3", "--atol", "probabilities=1e-5",
                     "--rtol", "0.01")
    assert code == 0, out
    check = json.loads((tmp_path / "a" / "edgeml.json").read_text())["artifacts"][0]["check"]
    assert {o["name"]: (o["atol"], o["rtol"]) for o in check["outputs"]} == {"logits": (1e-3, 0.01),
                                                                              "probabilities": (1e-5, 0.01)}
    code, out = _cli("convert", model, "-o", tmp_path / "b", "--atol", "1e-3", "--atol", "logits=1e-2")
    assert code == 2 and "not both" in out
    code, out = _cli("convert", model, "-o", tmp_path / "b", "--atol", "logits=big")
    assert code == 2 and "give a number" in out
    code, out = _cli("convert", model, "-o", tmp_path / "b", "--atol", "logits=1", "--atol", "logits=2")
    assert code == 2 and "'logits' is given twice" in out
    code, out = _cli("convert", model, "-o", tmp_path / "b", "--atol", "nope=1")
    assert code == 2 and "error: atol names no output 'nope'; the model's outputs are logits, probabilities" in out
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").glob("*.onnx"))


def test_fp16_atol_follows_each_rows_largest_magnitude():
    """FP16 rounds relative to the values a result came from: a logit near 0 in a row whose largest is 15 may be
    off by 0.03 (an FP16 EfficientNet's), not by 0.3; FP32's atol stays absolute."""
    reference = np.array([[15.0, 0.001, -2.0], [0.5, 0.2, -0.1]], np.float32)
    close, far = reference.copy(), reference.copy()
    close[0, 1] += 0.03
    far[0, 1] += 0.3
    assert compare_outputs({"y": reference}, {"y": close}, 2, precision="fp16").passed
    failed = compare_outputs({"y": reference}, {"y": far}, 2, precision="fp16")
    assert not failed.passed and "atol 0.01 x the row's largest |value|" in failed.outputs[0].reason
    small = reference.copy()
    small[1, 1] += 0.03  # a row whose largest is under 1: atol stays 0.01
    assert not compare_outputs({"y": reference}, {"y": small}, 2, precision="fp16").passed
    assert not compare_outputs({"y": reference}, {"y": close}, 2, precision="fp32", atol=0.01, rtol=0.01).passed


def test_a_quantized_artifact_is_judged_by_sample_cosine_or_top1_not_elementwise():
    """A compressed CoreML package on macOS: int8 weights move logits by more than any elementwise tolerance
    while computing the same thing (cosine 0.9999); one that computes something else fails by name."""
    from edgeml.validate import judged_as_quantized

    rng = np.random.default_rng(0)
    scores = rng.normal(0, 5, (32, 10)).astype(np.float32)
    scores[np.arange(32), rng.integers(0, 10, 32)] += 12  # a clear top-1 in every row
    near = scores + rng.normal(0, 0.2, scores.shape).astype(np.float32)
    raw = compare_outputs({"logits": scores}, {"logits": near}, 32, precision="int8")
    assert not raw.passed  # off int8's atol 0.1 + rtol 0.1 somewhere
    assert judged_as_quantized(raw, 0.99, classifier=False).passed
    shuffled = compare_outputs({"logits": scores}, {"logits": scores[::-1].copy()}, 32, precision="int8")
    judged = judged_as_quantized(shuffled, 0.99, classifier=True)
    assert not judged.passed and judged.outputs[0].reason.startswith("top-1 agreement")
    assert not judged_as_quantized(compare_outputs({"logits": scores}, {"logits": scores[::-1].copy()}, 32,
                                                   precision="int8"), 0.99, classifier=False).passed
