"""Property tests over what a user types or feeds: the spec parser, the number options, the data readers and
the runtime's input checks. Whatever hypothesis draws, the answer is an EdgeMLError or a success, never
anything else; and where the campaign's table (benchmarks/bad_inputs.py) says a value must be refused
(NaN, infinities, negatives), the CLI refuses it with exit 2.
"""

from __future__ import annotations

import io
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import edgeml  # noqa: E402
from edgeml.datafiles import open_source  # noqa: E402
from edgeml.errors import EdgeMLError  # noqa: E402
from edgeml.spec import DTYPE_ALIASES, TensorSpec, parse_spec  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bad_inputs  # noqa: E402

#: No example database in the repository; no deadline (the machine may be loaded); few examples: fast.
FUZZ = settings(deadline=None, database=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return bad_inputs.build_fixtures(tmp_path_factory.mktemp("fuzz"), parts=("onnx", "baselines"))


# -- the spec parser --------------------------------------------------------------------------------------

ODD_DIMS = ("batch", "?", "", "x", "٢٠", "²", "２", "1.5", "nan", "-1", "0", "99999999999", " 1", "1e3")
dims = st.lists(st.one_of(st.integers(-3, 10**13).map(str), st.sampled_from(ODD_DIMS), st.text(max_size=3)),
                max_size=5).map("x".join)
names = st.one_of(st.sampled_from(["x", "input_ids", "a/b", "é", "", "1x", "x y", "../x"]), st.text(max_size=5))
dtypes = st.one_of(st.none(), st.sampled_from([*DTYPE_ALIASES, "uint16", "", "FLOAT32", "float99"]),
                   st.text(max_size=6))
specs = st.builds(lambda n, d, t: f"{n}:{d}" + ("" if t is None else f":{t}"), names, dims, dtypes)


@FUZZ
@given(st.one_of(st.text(), specs))
def test_parse_spec_gives_a_spec_or_an_edgeml_error(text):
    try:
        spec = parse_spec(text)
    except EdgeMLError:
        return
    assert isinstance(spec, TensorSpec) and spec.name
    assert all((type(d) is int and d > 0) or (isinstance(d, str) and d) for d in spec.shape)
    assert text.strip().split(":")[1].isascii(), f"{text!r}: digits of another script read as {spec.shape}"
    if spec.shape:
        assert parse_spec(str(spec)) == spec


# -- number options, through the CLI ----------------------------------------------------------------------

def _float_text(low: float | None = None, high: float | None = None):
    """Floats as a user would type them, with NaN and the infinities, and what is not a float at all."""
    return st.one_of(st.floats(min_value=low, max_value=high).map(repr), st.sampled_from(["nan", "inf", "-inf", "-0"]),
                     st.floats(max_value=-1e-300).map(repr), st.sampled_from(["", "abc", "٢", "²"]))


def _int_text(high: int):
    return st.one_of(st.integers(max_value=high).map(str), st.sampled_from(["", "abc", "1.5", "nan", "٢", "²"]))


#: A strategy per bench option, bounded above so that any value accepted still makes a short run; the
#: campaign runs the values that could make a long one (99999999999 runs, 100000 threads) under a timeout.
BENCH_VALUES = {
    "--budget-ms": _float_text(), "--percentile": _float_text(), "--seed": _int_text(10**30),
    "--batch": _int_text(64), "--threads": _int_text(2), "--warmup": _int_text(100),
    "--warmup-ms": _float_text(high=50.0), "--runs": _int_text(200), "--min-seconds": _float_text(high=0.5),
    "--max-seconds": _float_text(high=1.0), "--max-regression": _float_text(),
}
CONVERT_VALUES = {"--atol": _float_text(), "--rtol": _float_text(), "--opset": _int_text(10**12)}
OPTIONS = {o.flag: o for o in bad_inputs.NUMBER_OPTIONS if o.flag in {*BENCH_VALUES, *CONVERT_VALUES}}


def _run_option(flag: str, text: str, fixtures: Path, work: Path):
    option = OPTIONS[flag]
    case = bad_inputs.Case(f"{flag} {text!r}", (*option.base, flag, text), bad_inputs.number_expectation(option, text),
                           "numbers")
    outcome, problems = bad_inputs.run_in_process(case, fixtures, work)
    assert not problems, f"{case.id}: {problems}\n{outcome.output[-2000:]}"


@settings(FUZZ, max_examples=40)
@given(st.sampled_from(sorted(BENCH_VALUES)).flatmap(lambda flag: st.tuples(st.just(flag), BENCH_VALUES[flag])))
def test_bench_number_options(fixtures, tmp_path, drawn):
    _run_option(*drawn, fixtures, tmp_path / "work")


@settings(FUZZ, max_examples=15)
@given(st.sampled_from(sorted(CONVERT_VALUES)).flatmap(lambda flag: st.tuples(st.just(flag), CONVERT_VALUES[flag])))
def test_convert_number_options(fixtures, tmp_path, drawn):
    _run_option(*drawn, fixtures, tmp_path / "work")


# -- the data readers -------------------------------------------------------------------------------------

SPECS = [TensorSpec("x", ("batch", 4))]
_names = itertools.count()


def _read_all(path: Path) -> None:
    """Every sample of ``path`` as a calibration source: each checked, or an EdgeMLError."""
    try:
        for sample in open_source(path, SPECS):
            assert sample["x"].shape == (1, 4) and sample["x"].dtype == np.float32
    except EdgeMLError:
        pass


array_dtypes = st.sampled_from(["<f4", "<f8", ">f4", "<f2", "<i8", "|i1", "|b1", "<c8", "<U2", "|S2"])
arrays = hnp.arrays(array_dtypes, st.one_of(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
                                            st.tuples(st.integers(0, 6), st.just(4))))


@FUZZ
@given(arrays, st.one_of(st.none(), st.integers(0, 200)))
def test_npy_reader_on_drawn_arrays(tmp_path, array, cut):
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = buffer.getvalue()
    path = tmp_path / f"a{next(_names)}.npy"  # a new name: an earlier file may still be memory-mapped
    path.write_bytes(data if cut is None else data[:cut])
    _read_all(path)


@FUZZ
@given(st.lists(st.one_of(st.integers(-1, 10**13), st.just(10**18)), max_size=3).map(tuple),
       st.sampled_from(["<f4", "<f8", "|b1", "<i8", "|O", "<c8", "<U3", ">f4", "|V4", "garbage", "<f4'"]),
       st.booleans(), st.binary(max_size=64))
def test_npy_reader_on_drawn_headers(tmp_path, shape, descr, fortran, body):
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    path = tmp_path / f"h{next(_names)}.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body)
    _read_all(path)


@FUZZ
@given(st.text(alphabet="0123456789.,-e\nnaif\"x_ \r;", max_size=120))
def test_csv_reader_on_drawn_text(tmp_path, text):
    path = tmp_path / f"c{next(_names)}.csv"
    path.write_text("x_0,x_1,x_2,x_3\n" + text)
    _read_all(path)


# -- the runtime's input checks ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runtime(fixtures):
    with edgeml.load(fixtures / "tiny.onnx") as model:
        yield model


feeds = st.one_of(
    hnp.arrays(st.sampled_from(["<f4", "<f8", "<f2", "<i8", "|b1", "<c8", "<U2", "|O"]),
               st.one_of(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
                         st.tuples(st.integers(0, 5), st.just(20)))),
    st.none(), st.text(max_size=4), st.integers(), st.floats(),
    st.lists(st.lists(st.floats(), max_size=21), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@FUZZ
@given(feeds)
def test_runtime_call_checks_its_inputs(runtime, value):
    try:
        y = runtime(value)
    except EdgeMLError:
        return
    rows = np.asarray(value).shape[0]
    assert y.shape == (rows, 3) and y.dtype == np.float32


@FUZZ
@given(st.dictionaries(st.sampled_from(["x", "y", "", "X"]), feeds, max_size=3))
def test_runtime_run_checks_its_feeds(runtime, named):
    try:
        outputs = runtime.run(named)
    except EdgeMLError:
        return
    assert set(outputs) == {"y"} and outputs["y"].shape == (np.asarray(named["x"]).shape[0], 3)
