"""Specs, generated data and runtimes under hostile input: property tests (hypothesis) over the spec
parser, the size estimate, the runtime's input checks and thread limits, plus the crafted ONNX models
that used to be internal errors (uint16/uint64/bfloat16 inputs, a scalar input, no inputs at all).

The rule they check: anything a user can pass gives a result or an EdgeMLError, never another exception.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper

import edgeml
from edgeml.cli import main
from edgeml.data import random_feeds
from edgeml.errors import EdgeMLError, InputError, SpecError
from edgeml.runtimes.base import MAX_THREADS, check_threads
from edgeml.spec import (DEFAULT_MAX_BYTES, DTYPE_ALIASES, MAX_BYTES_ENV, NUMPY_DTYPES, TensorSpec, batch_symbols,
                         format_shape, input_bytes, max_input_bytes, parse_spec, parse_specs)

#: Deterministic (the same examples on every machine and run) and leaving no example database behind.
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
QUICK = ("--runs", "5", "--warmup", "1", "--warmup-ms", "0", "--min-seconds", "0.05")

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,12}", fullmatch=True)
SYMBOLS = st.one_of(st.just("?"), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True))
DIMS = st.one_of(st.integers(1, 64), SYMBOLS.filter(lambda s: s != "scalar"))
FEEDABLE = sorted(NUMPY_DTYPES)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    return result.exit_code, result.output


# -- parse_spec ------------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=40))
def test_any_text_parses_or_is_a_spec_error(text):
    try:
        spec = parse_spec(text)
    except SpecError as exc:
        assert "\n" not in str(exc)
        return
    assert all(isinstance(d, int) and d > 0 or isinstance(d, str) for d in spec.shape)
    assert spec.dtype in NUMPY_DTYPES


@FUZZ
@given(st.text(alphabet=st.sampled_from("0123456789x×,:?ab_²٢٠１ \t-"), max_size=24))
def test_spec_like_text_parses_or_is_a_spec_error(text):
    """Text made of the characters a spec is written with (and look-alike digits) hits the dim rules."""
    try:
        spec = parse_spec("x:" + text)
    except SpecError:
        return
    assert all(isinstance(d, str) or str(d).isascii() for d in spec.shape)


@FUZZ
@given(NAMES, st.lists(DIMS, max_size=6), st.sampled_from(sorted(DTYPE_ALIASES)))
def test_a_spec_reads_back_from_how_it_is_printed(name, dims, alias):
    spec = TensorSpec(name, tuple(dims), DTYPE_ALIASES[alias])
    if len(dims) != 1 or "x" not in str(dims[0]):  # x:max_len has no '×' to tell it from x:maxl, x:en
        assert parse_spec(str(spec)) == spec
    assert repr(spec) == f"<TensorSpec {spec}>"
    if dims and not any("x" in str(d) for d in dims):  # the ASCII separator, as users type it
        assert parse_spec(f"{name}:{'x'.join(map(str, dims))}:{alias}") == spec


@pytest.mark.parametrize("text", ["x:1x²0", "x:1x٢٠", "x:１x20", "x:1x2⁰", "x:0x3", "x:-1x3", "x:1.5", "x:1xx3"])
def test_a_dim_is_a_positive_ascii_number_or_a_name(text):
    with pytest.raises(SpecError, match="bad dimension .*ASCII digits"):
        parse_spec(text)


def test_non_ascii_digits_are_a_clean_cli_error(tmp_path):
    for text in ("x:1x²0", "x:1x٢٠"):
        code, output = cli("convert", tmp_path / "missing.pt", "--input", text, "-o", tmp_path / "out")
        assert code == 2 and "internal error" not in output and "Traceback" not in output, output


@pytest.mark.parametrize("text", ["x:99999999999x99999999", "x:100000x100000x100", "x:" + "9" * 5000,
                                  "x:batchx3x100000x100000"])
def test_absurd_sizes_are_refused_naming_the_limit(text):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    assert "absurd" in message or (MAX_BYTES_ENV in message and "2 GiB" in message), message
    assert len(message) < 400, message


def test_the_limit_can_be_raised_and_is_checked(monkeypatch):
    with pytest.raises(SpecError, match=MAX_BYTES_ENV):
        parse_spec("x:100000x100000")  # 40 GB of float32
    monkeypatch.setenv(MAX_BYTES_ENV, "64G")
    assert max_input_bytes() == 64 * 1024**3
    assert parse_spec("x:100000x100000").shape == (100000, 100000)
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    with pytest.raises(SpecError, match=f"{MAX_BYTES_ENV}='lots' is not a size"):
        max_input_bytes()
    monkeypatch.delenv(MAX_BYTES_ENV)
    assert max_input_bytes() == DEFAULT_MAX_BYTES


@pytest.mark.parametrize("bad", ["x", "x:", ":1x3", "x:1x3:float99", "1x:3", "x y:3", "x\n:3", "x:1x3:int8:more",
                                 "x:1\nx3"])
def test_bad_names_dtypes_and_forms(bad):
    with pytest.raises(SpecError) as info:
        parse_spec(bad)
    assert "\n" not in str(info.value)


def test_specs_given_the_wrong_way():
    assert parse_specs("x:1x3") == [TensorSpec("x", (1, 3))]  # one string is one spec, not its letters
    assert parse_spec("t:scalar") == TensorSpec("t", ())
    with pytest.raises(SpecError, match="not int"):
        parse_specs([3])
    with pytest.raises(SpecError, match="given twice"):
        parse_specs(["x:1", "x:2"])
    with pytest.raises(SpecError, match="more than the 32"):
        parse_spec("x:" + "x".join(["1"] * 33))


# -- one shape format ------------------------------------------------------------------------------


def _identity_model(path, elem_type=TensorProto.FLOAT, shape=("batch", 3), inputs=1):
    """An ONNX model returning its inputs (several: their sum), for dtypes and ranks of any kind."""
    names = ["x"] if inputs == 1 else [f"x{i}" for i in range(inputs)]
    ins = [helper.make_tensor_value_info(n, elem_type, list(shape)) for n in names]
    node = helper.make_node("Identity" if inputs == 1 else "Sum", names, ["y"])
    graph = helper.make_graph([node], "identity", ins, [helper.make_tensor_value_info("y", elem_type, list(shape))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_symbolic_dim_prints_one_way_everywhere(tmp_path):
    from edgeml.backends import inspect as inspect_model

    path = _identity_model(tmp_path / "m.onnx", shape=("batch", 1))
    with edgeml.load(path) as m:
        shown = {str(m.inputs[0]), repr(m.inputs[0]).strip("<>").split(" ", 1)[1],
                 str(TensorSpec.from_dict(inspect_model(path)["inputs"][0])), str(parse_spec("x:batchx1"))}
        assert shown == {"x:batch×1:float32"}
        assert "x:batch×1:float32" in repr(m) and "x:batch×1:float32" in repr(m.inputs)
    assert format_shape(()) == "scalar" and format_shape((2, 3)) == "2×3"


# -- sizes, estimated before allocating ------------------------------------------------------------


@FUZZ
@given(st.lists(st.tuples(st.lists(st.one_of(st.integers(0, 5), st.just("b")), max_size=4),
                          st.sampled_from([d for d in FEEDABLE if d != "str"])), max_size=3),
       st.integers(1, 4), st.integers(1, 3))
def test_the_estimate_is_what_random_feeds_makes(shapes, batch, other):
    specs = [TensorSpec(f"i{n}", tuple(shape), dtype) for n, (shape, dtype) in enumerate(shapes)]
    feeds = random_feeds(specs, batch=batch, other=other)
    for spec in specs:
        assert feeds[spec.name].shape == spec.concrete_shape(batch, other, batch_symbols(specs))
        assert feeds[spec.name].dtype == spec.np_dtype
    assert input_bytes(specs, batch, other) == sum(a.nbytes for a in feeds.values())


def test_random_feeds_refuses_a_huge_batch_before_allocating():
    spec = TensorSpec("x", ("batch", 20))
    with pytest.raises(SpecError, match=rf"batch 99999999999 would take 7.28 TiB .*2 GiB limit.*{MAX_BYTES_ENV}="):
        random_feeds([spec], batch=99999999999)
    with pytest.raises(SpecError, match="would take"):  # 10^19 elements, as a crafted ONNX file declares them
        random_feeds([TensorSpec("x", (10**10, 10**9))])
    with pytest.raises(SpecError, match="would take"):  # a numpy batch: the product must not wrap around
        random_feeds([TensorSpec("x", ("batch", 10**9, 10**9))], batch=np.int64(10**10))


@pytest.mark.parametrize("batch", [0, -1, 1.5, True, "8"])
def test_random_feeds_refuses_a_batch_that_is_not_a_count(batch):
    with pytest.raises(SpecError, match="whole number >= 1"):
        random_feeds([TensorSpec("x", ("batch", 2))], batch=batch)


def test_a_negative_dim_from_a_malformed_file_is_a_spec_error():
    with pytest.raises(SpecError, match="dimension -5 is not a size; the model file is malformed"):
        random_feeds([TensorSpec("x", (1, -5))])


def test_cli_bench_huge_batch_is_a_clean_error(tmp_path):
    code, output = cli("bench", _identity_model(tmp_path / "m.onnx"), "--batch", "99999999999", *QUICK)
    assert code == 2 and "error:" in output and MAX_BYTES_ENV in output, output


# -- threads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [0, -1, 2.5, "2", True, 10**5])
def test_threads_must_be_a_count_within_the_limit(threads):
    with pytest.raises(InputError, match="threads"):
        check_threads(threads)


def test_threads_limit_is_the_same_on_every_machine(tmp_path):
    limit = MAX_THREADS
    assert check_threads(1) == 1 and check_threads(np.int64(limit)) == limit and check_threads(None) is None
    with pytest.raises(InputError, match=f"above the limit of {limit};"):
        edgeml.load(_identity_model(tmp_path / "m.onnx"), threads=limit + 1)
    code, output = cli("bench", tmp_path / "m.onnx", "--threads", "100000", *QUICK)
    assert code == 2 and f"limit of {limit}" in output, output


# -- ONNX inputs of every kind ---------------------------------------------------------------------

ELEMENT = {"uint16": TensorProto.UINT16, "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64,
           "uint8": TensorProto.UINT8, "int8": TensorProto.INT8, "int16": TensorProto.INT16,
           "float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE, "bool": TensorProto.BOOL}


@pytest.mark.parametrize("dtype", sorted(ELEMENT))
def test_onnx_inputs_of_every_numpy_type_run(tmp_path, dtype):
    path = _identity_model(tmp_path / f"{dtype}.onnx", ELEMENT[dtype])
    with edgeml.load(path) as m:
        assert str(m.inputs[0]) == f"x:batch×3:{dtype}"
        x = random_feeds(m.inputs, batch=2)["x"]
        np.testing.assert_array_equal(m(x), x)


def test_bfloat16_input_is_a_clean_error_naming_the_file(tmp_path):
    path = _identity_model(tmp_path / "bf16.onnx", TensorProto.BFLOAT16)
    with pytest.raises(SpecError, match=r"bf16\.onnx: input 'x' has type bfloat16, which edgeml cannot feed"):
        edgeml.load(path)
    code, output = cli("bench", path, *QUICK)
    assert code == 2 and "bfloat16" in output and "internal error" not in output, output


def test_scalar_and_no_input_models_run(tmp_path):
    scalar = _identity_model(tmp_path / "scalar.onnx", shape=())
    with edgeml.load(scalar) as m:
        assert str(m.inputs[0]) == "x:scalar:float32"
        assert m(2.5) == np.float32(2.5) and m.run({"x": np.float32(1)})["y"] == 1
        with pytest.raises(InputError, match="expects rank 0 .shape scalar., got rank 1 .shape 3."):
            m(np.zeros(3, np.float32))
    none = tmp_path / "none.onnx"
    constant = helper.make_node("Constant", [], ["y"], value=helper.make_tensor("c", TensorProto.FLOAT, [2], [1, 2]))
    graph = helper.make_graph([constant], "none", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(none))
    with edgeml.load(none) as m:
        assert m.inputs == [] and m().tolist() == [1, 2] and m.run({})["y"].tolist() == [1, 2]
        with pytest.raises(InputError, match="takes no inputs, got 1; call m"):
            m(np.zeros(2))
        with pytest.raises(InputError, match="takes no inputs"):
            m.predict(np.zeros(2))
    for path in (scalar, none):
        code, output = cli("bench", path, *QUICK)
        assert code == 0, output


# -- the runtime's input checks --------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    with edgeml.load(_identity_model(tmp_path_factory.mktemp("rt") / "m.onnx")) as m:
        yield m


ANY_ARRAY = hnp.arrays(
    dtype=st.one_of(hnp.scalar_dtypes(), hnp.unicode_string_dtypes(), hnp.byte_string_dtypes()),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
)
ANY_VALUE = st.one_of(ANY_ARRAY, st.none(), st.text(max_size=5), st.floats(), st.integers(),
                      st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=2)), max_size=4),
                      st.lists(st.lists(st.floats(), max_size=3), max_size=3), st.dictionaries(st.text(max_size=2), st.integers()))


@FUZZ
@given(ANY_VALUE)
def test_any_value_runs_or_is_an_input_error(runtime, value):
    for call in (lambda: runtime(value), lambda: runtime.run({"x": value}), lambda: runtime.predict(value)):
        try:
            out = call()
        except EdgeMLError as exc:
            assert "\n" not in str(exc)
            continue
        out = out["y"] if isinstance(out, dict) else out
        assert out.dtype == np.float32 and out.shape[1:] == (3,)


@FUZZ
@given(st.one_of(ANY_VALUE, st.lists(ANY_ARRAY, max_size=2), st.dictionaries(st.text(max_size=3), ANY_ARRAY, max_size=2)))
def test_any_feeds_run_or_are_an_input_error(runtime, feeds):
    try:
        runtime.run(feeds)
    except EdgeMLError as exc:
        assert "\n" not in str(exc)


def test_feeds_that_are_not_a_dict_say_what_to_use(runtime):
    with pytest.raises(InputError, match=r"run\(\) takes a dict .* not a list; use m\(\*arrays\)"):
        runtime.run([np.zeros((1, 3), np.float32)])
    with pytest.raises(InputError, match="missing input.*'x'.*unknown input.*'y'.*x:batch×3:float32"):
        runtime.run({"y": np.zeros((1, 3), np.float32)})


def test_a_dataframe_called_on_a_model_with_one_input_per_column(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x0": [1.0, 2.0], "x1": [3.0, 4.0]})
    with edgeml.load(_identity_model(tmp_path / "two.onnx", shape=("batch", 1), inputs=2)) as m:
        with pytest.raises(InputError, match=r"got 1; .*m\.predict\(df\).*m\.run\(feeds\)"):
            m(frame)
        assert m.predict(frame).ravel().tolist() == [4.0, 6.0]
        with pytest.raises(InputError, match=r"not a DataFrame; use m\.predict\(df\)"):
            m.run(frame)
        with pytest.raises(InputError, match="column 'x1' cannot be read as float32"):
            m.predict(frame.assign(x1=["a", "b"]))


def test_the_same_results_from_8_threads(runtime):
    """8 threads x 2000 calls on one runtime give the results one thread gives."""
    inputs = [np.random.default_rng(i).standard_normal((4, 3)).astype(np.float32) for i in range(8)]
    expected = [runtime(x).copy() for x in inputs]
    bad = []

    def work(i):
        for _ in range(2000):
            if not np.array_equal(runtime(inputs[i]), expected[i]) or \
                    not np.array_equal(runtime.run({"x": inputs[i]})["y"], expected[i]):
                bad.append(i)
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


# -- framework errors on a user's model are one line, naming it ------------------------------------


def test_a_torch_module_that_fails_or_returns_no_tensors():
    torch = pytest.importorskip("torch")
    from edgeml.runtimes.pytorch import TorchRuntime

    class Picky(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] > 2:
                raise ValueError("batch above 2\nsecond line")
            return x * 2

    m = TorchRuntime(Picky(), [TensorSpec("x", ("batch", 3))], path="picky.pt2")
    with pytest.raises(InputError, match=r"torch could not run picky\.pt2 on inputs x:batch×3:float32 "
                                         r"\(ValueError: batch above 2\)") as info:
        m(np.zeros((3, 3), np.float32))
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="cannot be turned into an array"):
        m(torch.zeros(1, 3, dtype=torch.bfloat16))

    class Nothing(torch.nn.Module):
        def forward(self, x):
            return None

    with pytest.raises(InputError, match="returns something that is not tensors"):
        TorchRuntime(Nothing(), [TensorSpec("x", ("batch", 3))])
    with pytest.raises(InputError, match="unknown device 'cuda:x'"):
        TorchRuntime(Picky(), [TensorSpec("x", ("batch", 3))], device="cuda:x")
    with pytest.raises(SpecError, match="probe inputs .* would take"):
        TorchRuntime(Picky(), [TensorSpec("x", ("batch", 10**6, 10**6))])


def test_a_sklearn_estimator_that_refuses_the_values():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from edgeml.runtimes.sklearn import SklearnRuntime

    X, y = load_iris(return_X_y=True)
    m = SklearnRuntime(LogisticRegression(max_iter=500).fit(X, y), [TensorSpec("X", ("batch", 4))], path="iris.skops")
    assert m.predict(X[:3].astype(np.float32)).tolist() == [0, 0, 0]
    with pytest.raises(InputError, match=r"scikit-learn could not run iris\.skops \(LogisticRegression\) .*NaN"):
        m(np.full((1, 4), np.nan, np.float32))


def test_an_onnx_error_at_run_time_names_the_file(tmp_path):
    path = tmp_path / "gather.onnx"
    data = helper.make_tensor("d", TensorProto.FLOAT, [3], [1, 2, 3])
    node = helper.make_node("Gather", ["d", "i"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("i", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [data])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with edgeml.load(path) as m:
        with pytest.raises(InputError, match=rf"onnxruntime could not run {re.escape(str(path))} on these inputs") as info:
            m(np.array([7]))
        assert "\n" not in str(info.value)
