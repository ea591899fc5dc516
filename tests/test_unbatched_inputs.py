"""Models with inputs that do not carry the batch on their first axis: silero-vad's ONNX file (input ?x?,
state 2x?x128, sr a scalar that must be 16000 or 8000) and a tiny model whose state is 2 x batch x 3.

Data the user gives keeps its shapes; generated data never breaks a fixed dim; a model that cannot run on
generated inputs fails with one line naming the guessed input and asking for --data, without onnxruntime's
own log lines on stderr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgeml
from edgeml.cli import main
from edgeml.data import random_feeds, sample_count, select_rows, stack_samples, unbatched
from edgeml.latency.runner import Method
from edgeml.spec import TensorSpec, batch_axes, batched, fixed_batch
from edgeml.validate import compare

QUICK = ("--runs", "5", "--warmup", "1", "--warmup-ms", "0", "--min-seconds", "0.02", "--max-seconds", "0.2")
QUICK_METHOD = Method(warmup_ms=0, warmup_runs=1, min_runs=5, min_seconds=0.02, max_seconds=0.2)


@pytest.fixture(scope="module")
def silero() -> Path:
    silero_vad = pytest.importorskip("silero_vad", reason="silero-vad (the real model with a 2x?x128 state) is not installed")
    path = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"
    if not path.is_file():
        pytest.skip(f"silero-vad {getattr(silero_vad, '__version__', '')} ships no {path.name}")
    return path


def _silero_data(folder: Path, rows: int) -> Path:
    """Real-shaped silero inputs: 512 samples of audio a row at 16 kHz, a zero state, sr=16000 (0-d)."""
    audio = (np.random.default_rng(rows).standard_normal((rows, 512)) * 0.1).astype(np.float32)
    path = folder / f"sil{rows}.npz"
    np.savez(path, input=audio, state=np.zeros((2, rows, 128), np.float32), sr=np.array(16000, dtype=np.int64))
    return path


@pytest.fixture(scope="module")
def state_model(tmp_path_factory) -> Path:
    """y = x @ W (batch x 4 -> batch x 3); hN = h + y: h is 2 x batch x 3, its batch on axis 1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "W")
    axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Unsqueeze", ["y", "axes"], ["y1"]),
         helper.make_node("Add", ["h", "y1"], ["hN"])],
        "state",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, "batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("hN", TensorProto.FLOAT, [2, "batch", 3])],
        initializer=[weight, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path_factory.mktemp("state") / "state.onnx"
    onnx.save(model, str(path))
    return path


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{result.exception!r}\n{result.output}"
    return result.exit_code, result.output


def one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and [line for line in output.splitlines() if line.strip()][-1] == errors[0], output
    return errors[0]


# -- where the batch lives ---------------------------------------------------------------------------


def test_the_batch_axis_of_each_input():
    silero = [TensorSpec("input", ("?", "?")), TensorSpec("state", (2, "?", 128)), TensorSpec("sr", (), "int64")]
    assert fixed_batch(silero) is None
    assert batch_axes(silero) == {"input": 0, "state": None, "sr": None}  # '?' names nothing: state's is unknown
    named = [TensorSpec("x", ("batch", 4)), TensorSpec("h", (2, "batch", 3))]
    assert batch_axes(named) == {"x": 0, "h": 1}
    assert fixed_batch([TensorSpec("x", (1, 20)), TensorSpec("t", (), "int64")]) == 1
    assert batch_axes([TensorSpec("x", (1, 20)), TensorSpec("t", (), "int64")]) == {"x": 0, "t": None}
    # batched() sets the batch where it lives; with_batch() still replaces the first dim, as it always did
    assert [s.shape for s in batched(named, 16)] == [(16, 4), (2, 16, 3)]
    assert [s.shape for s in batched(silero, 16)] == [(16, "?"), (2, "?", 128), ()]
    assert [s.shape for s in batched([TensorSpec("x", (1, 20))], 16)] == [(16, 20)]  # a fixed batch: run in chunks


def test_generated_inputs_never_break_a_fixed_dim(silero, state_model):
    for path in (silero, state_model):
        with edgeml.load(path) as m:
            for specs in (m.inputs, batched(m.inputs, 16)):
                feeds = random_feeds(specs, batch=3)
                for spec in m.inputs:
                    shape = feeds[spec.name].shape
                    assert len(shape) == len(spec.shape)
                    assert all(d == s for d, s in zip(spec.shape, shape) if isinstance(d, int)), (spec, shape)
    with edgeml.load(state_model) as m:  # the batch symbol sizes every axis it is on
        feeds = random_feeds(batched(m.inputs, 16))
        assert feeds["x"].shape == (16, 4) and feeds["h"].shape == (2, 16, 3)
        assert m.run(feeds)["hN"].shape == (2, 16, 3)
    with edgeml.load(silero) as m:  # an unnamed dim gets the default size, not the batch
        feeds = random_feeds(m.inputs, batch=2)
        assert feeds["input"].shape == (2, 8) and feeds["state"].shape == (2, 8, 128) and feeds["sr"].shape == ()


def test_rows_are_counted_stacked_and_selected_on_the_batch_axis():
    specs = [TensorSpec("x", ("batch", 4)), TensorSpec("h", (2, "batch", 3)), TensorSpec("t", (), "int64")]
    samples = [{"x": np.full((1, 4), i, np.float32), "h": np.full((2, 1, 3), i, np.float32), "t": np.array(7)}
               for i in range(5)]
    feeds = stack_samples(samples, specs=specs)
    assert feeds["x"].shape == (5, 4) and feeds["h"].shape == (2, 5, 3) and feeds["t"].shape == ()
    assert sample_count(feeds, specs) == 5
    assert sample_count(feeds) == 2  # without specs: the first axis, as before
    picked = select_rows(feeds, specs, slice(1, 3))
    assert picked["x"][:, 0].tolist() == [1, 2] and picked["h"][0, :, 0].tolist() == [1, 2] and int(picked["t"]) == 7
    assert [s.name for s in unbatched(specs)] == ["h"]


# -- bench ---------------------------------------------------------------------------------------------


def test_bench_times_silero_on_its_data_as_given(silero, tmp_path):
    data = _silero_data(tmp_path, 1)
    code, output = cli("bench", silero, "--data", data, *QUICK)
    assert code == 0, output
    assert "input 1×512 float32, state 2×1×128 float32, sr scalar int64" in output
    assert "fixed batch" not in output and "error:" not in output
    result = edgeml.bench(silero, data=_silero_data(tmp_path, 4), method=QUICK_METHOD)
    assert result.batch == 4  # the rows of the data, run as they are
    assert [t["shape"] for t in result.inputs["tensors"]] == [[4, 512], [2, 4, 128], []]


def test_bench_splits_data_only_where_it_can(state_model, tmp_path):
    data = tmp_path / "state.npz"
    np.savez(data, x=np.ones((3, 4), np.float32), h=np.zeros((2, 3, 3), np.float32))
    result = edgeml.bench(state_model, data=data, method=QUICK_METHOD)
    assert result.batch == 3 and [t["shape"] for t in result.inputs["tensors"]] == [[3, 4], [2, 3, 3]]
    line = one_error_line(cli("bench", state_model, "--data", data, "--batch", "2", *QUICK)[1])
    assert "'h'" in line and "--batch 2" in line and "drop --batch" in line
    result = edgeml.bench(state_model, batch=2, method=QUICK_METHOD)  # generated: the batch on h's axis 1
    assert [t["shape"] for t in result.inputs["tensors"]] == [[2, 4], [2, 2, 3]]


def test_silero_on_generated_inputs_fails_in_one_line_without_onnxruntime_logs(silero, capfd):
    code, output = cli("bench", silero, "--batch", "2", *QUICK)
    assert code == 2, output
    line = one_error_line(output)
    assert "generated inputs" in line and "'sr'" in line and "--data" in line
    err = capfd.readouterr().err
    assert "onnxruntime:" not in err and "sequential_executor" not in err, err


# -- the check ----------------------------------------------------------------------------------------


def test_a_check_on_silero_data_counts_its_rows(silero, tmp_path):
    from edgeml.data import read_feeds

    with edgeml.load(silero) as m:
        feeds = read_feeds(_silero_data(tmp_path, 4), m.inputs)
        assert {k: v.shape for k, v in feeds.items()} == {"input": (4, 512), "state": (2, 4, 128), "sr": ()}
        result = compare(m, m, feeds)
    assert result.passed and result.samples == 4


def test_convert_checks_silero_on_given_data(silero, tmp_path):
    out = tmp_path / "out"
    code, output = cli("convert", silero, "-o", out, "--data", _silero_data(tmp_path, 1))
    assert code == 0, output
    assert "check passed on 1 samples" in output and (out / "silero_vad.onnx").is_file()


def test_static_int8_refuses_inputs_it_cannot_split_into_samples(state_model, tmp_path):
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.ones((4, 4), np.float32), h=np.zeros((2, 4, 3), np.float32))
    code, output = cli("convert", state_model, "-o", tmp_path / "out", "--int8", "--calib", data)
    line = one_error_line(output)
    assert code == 2 and "input 'h'" in line and "drop --calib" in line
    assert not (tmp_path / "out" / "state.int8.onnx").exists()
