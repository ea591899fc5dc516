"""Dimension ranges (``--input x:1..8x4``, ``--shape seq=4..16``): parsed and shown one way, refused in one line
when malformed, carried by a torch export into ``torch.export.Dim`` bounds, into the ONNX artifact's metadata and
the manifest, honoured by every generated input, and enforced by bench."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

import edgeml
from edgeml.data import check_sizes, concrete_specs, declare_ranges, largest_batch, parse_shapes, random_feeds
from edgeml.converters.torch_onnx import torch_to_onnx
from edgeml.errors import InputError, SpecError
from edgeml.latency.runner import Method
from edgeml.model_meta import ModelMeta, input_meta, ranged_specs, read_meta
from edgeml.sources import load_source
from edgeml.sources.torch_source import program_input_specs
from edgeml.spec import DimRange, TensorSpec, format_shape, parse_spec, parse_specs

QUICK = dict(method=Method(warmup_ms=0, warmup_runs=1, min_runs=3, min_seconds=0.01))


# -- syntax and representation ---------------------------------------------------------------------


@pytest.mark.parametrize("text, shape, ranges, shown", [
    ("x:1..32x3x224x224", ("batch", 3, 224, 224), {"batch": (1, 32, 32)}, "x:batch(1..32)×3×224×224:float32"),
    ("x:batch=1..32x3", ("batch", 3), {"batch": (1, 32, 32)}, "x:batch(1..32)×3:float32"),
    ("ids:2..4xseq=8..64..128:int64", ("batch", "seq"), {"batch": (2, 4, 4), "seq": (8, 64, 128)},
     "ids:batch(2..4)×seq(8..64..128):int64"),
    ("in.put:2x1..9", (2, "in_put_dim1"), {"in_put_dim1": (1, 9, 9)}, "in.put:2×in_put_dim1(1..9):float32"),
])
def test_ranges_parse_format_and_round_trip(text, shape, ranges, shown):
    spec = parse_spec(text)
    assert spec.shape == shape and spec.ranges == ranges and str(spec) == shown
    assert all(isinstance(d, (int, str)) for d in spec.shape)  # every user of .shape still sees ints and names
    assert parse_spec(str(spec)) == spec
    assert TensorSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert TensorSpec("x", (1, 4)).to_dict() == {"name": "x", "shape": [1, 4], "dtype": "float32"}  # no ranges: as before
    assert format_shape(spec.shape, spec.ranges) == shown.split(":")[1]
    assert "(" not in format_shape(spec.shape)  # without ranges, shapes read as before


def test_specs_share_a_dim_and_its_range():
    x, mask = parse_specs(["x:1..8x4", "mask:batchx4"])
    assert mask.ranges == {"batch": DimRange(1, 8, 8)} == x.ranges
    assert x.with_batch(3).ranges == {} and x.with_batch("batch").ranges == x.ranges
    with pytest.raises(SpecError, match=r"dim batch has range 1\.\.8 in input 'x' and 1\.\.9 in input 'y'"):
        parse_specs(["x:1..8x4", "y:1..9x4"])


@pytest.mark.parametrize("text, message", [
    ("x:8..1x4", r"range 8\.\.1 for dim batch .*minimum above its maximum; write 1\.\.8"),
    ("x:0..8x4", r"range 0\.\.8 for dim batch .*sizes start at 1; write 1\.\.8"),
    ("x:1.5..8x4", r"bad range '1\.5\.\.8' for dim batch .*whole numbers"),
    ("x:4..4x4", r"range 4\.\.4 .*write the size 4 itself"),
    ("x:1..40..32", r"opt 40 is outside 1\.\.32"),
    ("x:4xseq=a..b", r"bad range 'a\.\.b' for dim seq \(axis 1\) of input 'x'"),
])
def test_bad_ranges_are_one_line_errors(text, message):
    with pytest.raises(SpecError, match=message) as caught:
        parse_spec(text)
    assert "\n" not in str(caught.value)


def test_shape_ranges_parse_and_are_refused_where_they_set_nothing():
    shapes = parse_shapes(["sequence=8..128", "height=224"])
    assert shapes == {"height": 224} and shapes.ranges == {"sequence": DimRange(8, 128, 128)}
    assert parse_shapes({"batch": "1..4..32"}).ranges == {"batch": DimRange(1, 4, 32)}
    with pytest.raises(InputError, match="gives sequence twice"):
        parse_shapes("sequence=8..128,sequence=16")
    with pytest.raises(SpecError, match=r"range 0\.\.8 for --shape seq"):
        parse_shapes("seq=0..8")
    specs = [TensorSpec("ids", ("batch", "sequence"), "int64")]
    with pytest.raises(InputError, match=r"sequence=8\.\.128 is a range, which only convert takes.*--shape sequence=128"):
        check_sizes(specs, shapes)  # bench: the artifact's dims are what they are


def test_declared_ranges_reach_specs_meta_and_generated_inputs():
    specs = [TensorSpec("ids", ("batch", "sequence"), "int64"), TensorSpec("mask", ("batch", "sequence"), "int64")]
    hf = ModelMeta(dim_max={"sequence": 512})
    with pytest.raises(InputError, match="no input of the model has a symbolic dim named 'height'.*a fixed dim takes no range"):
        declare_ranges(specs, hf, parse_shapes("height=1..8").ranges)
    with pytest.raises(InputError, match=r"beyond the model's largest sequence, 512; use a range up to 512"):
        declare_ranges(specs, hf, parse_shapes("sequence=8..1024").ranges)
    specs, meta = declare_ranges(specs, hf, parse_shapes("sequence=8..16..128,batch=1..4").ranges)
    assert all(s.ranges == {"batch": (1, 4, 4), "sequence": (8, 16, 128)} for s in specs)
    assert meta.dim_range == {"batch": [1, 4, 4], "sequence": [8, 16, 128]} and meta.dim_max == {"sequence": 128, "batch": 4}
    assert largest_batch(specs) == 4
    # generated at opt; the batch and --shape sizes stay inside the range, on the specs or on the metadata alone
    plain = [TensorSpec(s.name, s.shape, s.dtype) for s in specs]
    for given, recorded in ((specs, None), (plain, meta)):
        assert [s.shape for s in concrete_specs(given, batch=3, meta=recorded)] == [(3, 16), (3, 16)]
        with pytest.raises(InputError, match=r"batch 5 is outside the model's range for batch, 1\.\.4"):
            random_feeds(given, batch=5, meta=recorded)
        with pytest.raises(InputError, match=r"sequence=4 is outside the model's range for sequence, 8\.\.16\.\.128; use a size in 8\.\.128"):
            concrete_specs(given, sizes={"sequence": 4}, meta=recorded)
    assert ranged_specs(plain, meta) == specs
    crafted = ModelMeta(dim_range={"a": [4, 2, 1], "b": "x", "c": [1, True, 3]})
    assert crafted.ranges == {} and input_meta(crafted_runtime(plain, crafted)).dim_range == {}


def crafted_runtime(specs, meta):
    """Something with ``inputs`` and ``metadata``, as input_meta reads a runtime."""
    return type("Crafted", (), {"inputs": specs, "metadata": meta.to_props()})()


# -- carried: torch export, ONNX metadata, manifest, bench ---------------------------------------------


class MeanOverSequence(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x.mean(dim=1))


@pytest.fixture(scope="module")
def ranged_artifact(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ranged")
    return edgeml.convert(MeanOverSequence(), output_dir=out, inputs=["x:1..8xseq=2..6x4"])


def test_torch_conversion_carries_the_range(ranged_artifact):
    (artifact,) = ranged_artifact.artifacts
    meta = read_meta(onnx.load(str(artifact.path)))
    assert meta.dim_range == {"batch": [1, 8, 8], "seq": [2, 6, 6]} and meta.dim_max == {"batch": 8, "seq": 6}
    assert artifact.check.passed
    assert artifact.check.inputs["tensors"][0]["shape"][1] == 6  # the non-batch dim is checked at its opt (= max)
    manifest = json.loads((artifact.path.parent / "edgeml.json").read_text())
    source_inputs = manifest["artifacts"][0]["source"]["inputs"]
    assert source_inputs == [{"name": "x", "shape": ["batch", "seq", 4], "dtype": "float32",
                              "ranges": {"batch": [1, 8, 8], "seq": [2, 6, 6]}}]


def test_torch_export_honours_the_range(monkeypatch):
    """The export gets torch.export.Dim bounds and example sizes inside them; what torch really does with the
    bounds: the program records them (read back by program_input_specs) and refuses a size beyond them."""
    source = load_source(MeanOverSequence(), inputs=["x:4..8xseq=2..6x4"])
    seen, export = {}, torch.onnx.export

    def spy(model, args, **kwargs):
        seen.update(args=args, dynamic_shapes=kwargs["dynamic_shapes"])
        return export(model, args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", spy)
    torch_to_onnx(source)
    assert seen["args"][0].shape == (4, 3, 4)  # batch example 2 raised to the range's min; seq's 3 inside 2..6
    ((batch, seq),) = [tuple(d.values()) for d in seen["dynamic_shapes"]]
    assert (batch.min, batch.max, seq.min, seq.max) == (4, 8, 2, 6)
    program = torch.export.export(source.model, seen["args"], dynamic_shapes=seen["dynamic_shapes"])
    (spec,) = program_input_specs(program)
    assert spec.ranges["batch"] == (4, 8, 8) and sorted(spec.ranges.values()) == [(2, 6, 6), (4, 8, 8)]
    assert program.module()(torch.zeros(8, 6, 4)).shape == (8, 3)
    with pytest.raises(AssertionError, match=r"<= 8"):
        program.module()(torch.zeros(9, 6, 4))


def test_bench_refuses_sizes_outside_the_recorded_range(ranged_artifact):
    path = ranged_artifact.artifacts[0].path
    result = edgeml.bench(path, batch=8, shapes=["seq=2"], **QUICK)
    assert result.inputs["tensors"][0]["shape"] == [8, 2, 4]
    with pytest.raises(InputError, match=r"--shape seq=1 is outside the model's range for seq, 2\.\.6; use a size in 2\.\.6"):
        edgeml.bench(path, shapes=["seq=1"], **QUICK)
    with pytest.raises(InputError, match=r"--shape seq=7 is outside the model's range for seq, 2\.\.6"):
        edgeml.bench(path, shapes=["seq=7"], **QUICK)
    with pytest.raises(InputError, match=r"batch 9 is outside the model's range for batch, 1\.\.8"):
        edgeml.bench(path, batch=9, **QUICK)
    with pytest.raises(InputError, match=r"seq=2\.\.4 is a range, which only convert takes"):
        edgeml.bench(path, shapes=["seq=2..4"], **QUICK)


def test_convert_carries_shape_ranges_and_the_check_stays_inside_them(tmp_path, monkeypatch):
    """--shape ranges on symbolic dims: recorded in the artifact's metadata, generated inputs at OPT, and no
    call of the check runs more rows than the batch range's max (16 samples go in chunks of 4)."""
    from edgeml.runtimes.onnxrt import OnnxRuntime

    class Pool(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=1)

    seen = []
    original = OnnxRuntime.run

    def spy(self, feeds):
        seen.append(feeds["x"].shape)
        return original(self, feeds)

    monkeypatch.setattr(OnnxRuntime, "run", spy)
    result = edgeml.convert(Pool().eval(), "onnx", tmp_path, inputs=["x:batchxseqx4"], shapes=["batch=1..4", "seq=2..5..6"])
    assert read_meta(onnx.load(str(result.onnx))).dim_range == {"batch": [1, 4, 4], "seq": [2, 5, 6]}
    assert result.artifacts[0].check.samples == 16 and seen and max(shape[0] for shape in seen) <= 4
    assert {shape[1] for shape in seen} == {5}
