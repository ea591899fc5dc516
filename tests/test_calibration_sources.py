"""Calibration sources: every kind on real data (scikit-learn's digits and breast cancer sets), the split,
the streaming, the checks against the model's input specs, and the errors."""

from __future__ import annotations

import re
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

from edgeml import datafiles
from edgeml.datafiles import ImageOptions, open_source
from edgeml.errors import BackendMissing, InputError, SpecError
from edgeml.spec import TensorSpec, format_shape

Image = pytest.importorskip("PIL.Image")

DIGIT = TensorSpec("x", ("batch", 1, 8, 8), "float32")
TABLE = TensorSpec("x", ("batch", 30), "float32")
INDEX = TensorSpec("x", ("batch", 1), "float32")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().images[:40]  # (40, 8, 8) floats 0..16


@pytest.fixture(scope="module")
def cancer() -> np.ndarray:
    return load_breast_cancer().data  # (569, 30) float64


def write_pngs(folder, images, suffix=".png"):
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{i:03d}{suffix}")
    return folder


def shape(*dims) -> str:
    """A shape as error messages write it, as a regular expression."""
    return re.escape(format_shape(dims))


def ids(source) -> list[int]:
    return [int(sample["x"][0, 0]) for sample in source]


def indexed(tmp_path, n: int):
    """A source whose sample i holds the value i, to follow samples through a split."""
    np.save(tmp_path / "ids.npy", np.arange(n, dtype=np.float32)[:, None])
    return open_source(tmp_path / "ids.npy", [INDEX])


def peak_bytes(source) -> tuple[int, int]:
    """(samples, peak bytes traced) while iterating over ``source``."""
    tracemalloc.start()
    try:
        count = sum(1 for _ in source)
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- .npy / .npz ---------------------------------------------------------------------------------------

def test_npy_yields_each_row_as_a_checked_sample(tmp_path, cancer):
    np.save(tmp_path / "calib.npy", cancer)
    source = open_source(tmp_path / "calib.npy", [TABLE])
    samples = list(source)
    assert len(source) == len(samples) == 569
    assert "569 samples" in source.description and source.preprocessing is None
    assert samples[7]["x"].shape == (1, 30) and samples[7]["x"].dtype == np.float32
    np.testing.assert_array_equal(samples[7]["x"][0], cancer[7].astype(np.float32))


def test_npy_is_read_row_by_row_and_never_whole(tmp_path, monkeypatch):
    data = np.random.default_rng(0).standard_normal((2000, 3, 16, 16), dtype=np.float32)  # 6 MB
    np.save(tmp_path / "big.npy", data)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load reads whole arrays"))
    source = open_source(tmp_path / "big.npy", [TensorSpec("x", ("batch", 3, 16, 16))])
    count, peak = peak_bytes(source)
    assert count == 2000 and peak < data.nbytes / 20
    np.testing.assert_array_equal(next(iter(source))["x"][0], data[0])


def test_npz_maps_uncompressed_members_and_reads_compressed_ones_whole(tmp_path):
    data = np.random.default_rng(1).standard_normal((2000, 768)).astype(np.float32)  # 6 MB
    spec = TensorSpec("x", ("batch", 768))
    np.savez(tmp_path / "plain.npz", x=data)
    np.savez_compressed(tmp_path / "packed.npz", x=data)
    plain = open_source(tmp_path / "plain.npz", [spec])
    packed = open_source(tmp_path / "packed.npz", [spec])
    assert "streamed" in plain.description and "compressed" in packed.description
    first = next(iter(plain))["x"]
    np.testing.assert_array_equal(first[0], data[0])
    assert isinstance(datafiles.read_arrays(tmp_path / "plain.npz", [spec])["x"], datafiles._Rows)
    (count, plain_peak), (_, packed_peak) = peak_bytes(plain), peak_bytes(packed)
    assert count == 2000 and plain_peak < data.nbytes / 20 <= data.nbytes <= packed_peak  # the measure sees a whole load
    np.testing.assert_array_equal(np.concatenate([s["x"] for s in packed]), data)


def test_npz_holds_one_array_per_input(tmp_path, cancer):
    specs = [TensorSpec("a", ("batch", 20)), TensorSpec("b", ("batch", 10), "float64")]
    np.savez(tmp_path / "two.npz", a=cancer[:, :20], b=cancer[:, 20:], labels=np.zeros(569))
    samples = list(open_source(tmp_path / "two.npz", specs))
    assert len(samples) == 569 and set(samples[0]) == {"a", "b"}
    np.testing.assert_array_equal(samples[3]["b"][0], cancer[3, 20:])
    assert samples[3]["b"].dtype == np.float64


def test_npy_folder_of_samples_and_batches_in_sorted_order(tmp_path, cancer):
    folder = tmp_path / "arrays"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "a_one.npy", cancer[0])  # a sample without batch axis
    np.save(folder / "b_batch.npy", cancer[1:5])  # a batch of 4
    np.savez(folder / "c_batch.npz", x=cancer[5:8])
    np.savez_compressed(folder / "sub" / "d.npz", x=cancer[8:10])
    (folder / "notes.txt").write_text("ignored")
    source = open_source(folder, [TABLE])
    assert len(source) == 10 and "4 .npy/.npz files, 10 samples" in source.description
    np.testing.assert_allclose(np.concatenate([s["x"] for s in source]), cancer[:10].astype(np.float32))


# -- images -------------------------------------------------------------------------------------------

def test_png_folder_matches_the_original_digits(tmp_path, digits):
    folder = write_pngs(tmp_path / "images", digits)
    source = open_source(folder, [DIGIT], image=ImageOptions(scale=16.0))
    samples = list(source)
    assert len(source) == 40 and "40 PNG/JPEG files" in source.description
    assert samples[5]["x"].shape == (1, 1, 8, 8) and samples[5]["x"].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([s["x"][:, 0] for s in samples]), (digits / 16).astype(np.float32))
    assert source.preprocessing == {"resize": [8, 8], "mean": None, "std": None, "layout": "NCHW", "scale": 16.0,
                                    "color": "L", "resample": "bilinear"}


def test_image_normalization_layout_color_and_resize(tmp_path, digits):
    folder = write_pngs(tmp_path / "images", digits[:6])
    options = ImageOptions(scale=16.0, mean=(0.5,), std=(0.25,), layout="nhwc")
    nhwc = next(iter(open_source(folder, [TensorSpec("x", ("batch", 8, 8, 1))], image=options)))["x"]
    np.testing.assert_allclose(nhwc[0, :, :, 0], (digits[0] / 16 - 0.5) / 0.25, atol=1e-6)
    rgb = next(iter(open_source(folder, [TensorSpec("x", ("batch", 3, 8, 8))], image=ImageOptions(scale=16.0))))["x"]
    assert rgb.shape == (1, 3, 8, 8) and np.array_equal(rgb[0, 0], rgb[0, 2])
    small = open_source(folder, [TensorSpec("x", ("batch", 1, 4, 4))])  # default: the model's H, W
    assert next(iter(small))["x"].shape == (1, 1, 4, 4) and small.preprocessing["resize"] == [4, 4]
    free = open_source(folder, [TensorSpec("x", ("batch", 1, "h", "w"))], image=ImageOptions(resize=(16, 12)))
    assert next(iter(free))["x"].shape == (1, 1, 16, 12)


def test_jpeg_files_are_read(tmp_path, digits):
    folder = write_pngs(tmp_path / "jpegs", digits[:3] * 15, suffix=".jpg")
    samples = list(open_source(folder, [DIGIT]))
    assert len(samples) == 3
    np.testing.assert_allclose(samples[0]["x"][0, 0], digits[0] * 15 / 255, atol=0.15)


# -- CSV ------------------------------------------------------------------------------------------------

def test_csv_columns_by_input_name(tmp_path, cancer):
    frame = pd.DataFrame(cancer, columns=[f"x_{i}" for i in range(30)])
    frame.insert(0, "label", 1)
    frame.to_csv(tmp_path / "named.csv", index=False)
    source = open_source(tmp_path / "named.csv", [TABLE])
    samples = list(source)
    assert len(source) == 569 and "569 rows" in source.description
    np.testing.assert_allclose(samples[9]["x"][0], cancer[9].astype(np.float32), rtol=1e-6)


def test_csv_single_input_takes_every_column(tmp_path, cancer):
    data = load_breast_cancer()
    pd.DataFrame(cancer, columns=data.feature_names).to_csv(tmp_path / "features.csv", index=False)
    first = next(iter(open_source(tmp_path / "features.csv", [TABLE])))
    np.testing.assert_allclose(first["x"][0], cancer[0].astype(np.float32), rtol=1e-6)


def test_csv_several_inputs_with_text(tmp_path, cancer):
    frame = pd.DataFrame({"radius": cancer[:50, 0], "size_0": cancer[:50, 1], "size_1": cancer[:50, 2],
                          "code": ["007"] * 25 + ["x"] * 25, "count": np.arange(50)})
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    specs = [TensorSpec("radius", ("batch", 1)), TensorSpec("size", ("batch", 2)),
             TensorSpec("code", ("batch", 1), "str"), TensorSpec("count", ("batch",), "int64")]
    samples = list(open_source(tmp_path / "mixed.csv", specs))
    assert len(samples) == 50
    assert samples[3]["size"].shape == (1, 2) and samples[3]["count"].tolist() == [3]
    assert samples[0]["code"].dtype == object and samples[0]["code"][0, 0] == "007"


def test_csv_is_read_in_chunks(tmp_path, cancer, monkeypatch):
    pd.DataFrame(cancer, columns=[f"x_{i}" for i in range(30)]).to_csv(tmp_path / "c.csv", index=False)
    monkeypatch.setattr(datafiles, "CSV_CHUNK_ROWS", 100)
    reads = []
    real = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: reads.append(k) or real(*a, **k))
    source = open_source(tmp_path / "c.csv", [TABLE])
    calib, _ = source.split(200, 50)
    assert len(list(calib)) == 200
    assert all(k.get("nrows") == 0 or k.get("chunksize") == 100 for k in reads)


# -- functions ---------------------------------------------------------------------------------------

LOADER = """
import numpy as np

def batches():
    images = np.load({path!r})
    for start in range(0, len(images), 16):
        yield {{"x": images[start:start + 16]}}

NOT_A_FUNCTION = 3
"""


def test_file_function_batches_are_split_into_samples(tmp_path, digits):
    np.save(tmp_path / "digits.npy", digits[:, None] / 16)
    (tmp_path / "loader.py").write_text(LOADER.format(path=str(tmp_path / "digits.npy")))
    source = open_source(f"{tmp_path}/loader.py:batches", [DIGIT])
    samples = list(source)
    assert len(source) == len(samples) == 40 and "called again for every pass" in source.description
    np.testing.assert_array_equal(samples[17]["x"][0, 0], (digits[17] / 16).astype(np.float32))
    assert len(list(source)) == 40  # a second pass calls the function again


def test_module_function_is_imported_from_the_current_folder(tmp_path, monkeypatch, digits):
    np.save(tmp_path / "digits.npy", digits[:, None])
    (tmp_path / "calib_loader_mod.py").write_text(LOADER.format(path=str(tmp_path / "digits.npy")))
    monkeypatch.chdir(tmp_path)
    try:
        assert len(open_source("calib_loader_mod:batches", [DIGIT])) == 40
    finally:
        sys.modules.pop("calib_loader_mod", None)


def test_callable_object_with_torch_tensors(digits):
    torch = pytest.importorskip("torch")
    source = open_source(lambda: [{"x": torch.from_numpy(digits[i:i + 10, None])} for i in range(0, 40, 10)], [DIGIT])
    assert len(source) == 40 and next(iter(source))["x"].dtype == np.float32


# -- split ------------------------------------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_sized(tmp_path):
    source = indexed(tmp_path, 100)
    calib, held = source.split(30, 20, seed=3)
    assert (len(calib), len(held)) == (30, 20)
    assert not set(ids(calib)) & set(ids(held))
    again, held_again = source.split(30, 20, seed=3)
    assert ids(again) == ids(calib) and ids(held_again) == ids(held)
    assert ids(source.split(30, 20, seed=4)[0]) != ids(calib)
    assert ids(calib) == sorted(ids(calib))  # read in file order
    everything, rest = source.split(None, 25)
    assert (len(everything), len(rest)) == (75, 25) and "75 of 100 samples calibrate" in everything.description


@pytest.mark.parametrize(("n", "calib", "holdout", "expected"), [
    (10, 64, 64, (8, 2)), (10, 10, 64, (8, 2)), (2, 64, 64, (1, 1)), (1, 64, 64, (1, 0)),
    (10, 64, 1, (9, 1)), (10, 64, 0, (10, 0)), (10, None, 64, (8, 2)),
])
def test_split_holds_out_20_percent_of_a_small_source(tmp_path, n, calib, holdout, expected):
    calib_part, held = indexed(tmp_path, n).split(calib, holdout)
    assert (len(calib_part), len(held)) == expected
    assert sorted(ids(calib_part) + ids(held)) == list(range(n))
    assert ("only" in calib_part.description) == (expected[1] > 0)


def test_split_of_streamed_and_image_sources(tmp_path, digits, cancer):
    pd.DataFrame(cancer, columns=[f"x_{i}" for i in range(30)]).to_csv(tmp_path / "c.csv", index=False)
    table = open_source(tmp_path / "c.csv", [TABLE])
    calib, held = table.split(50, 10, seed=1)
    order = np.random.default_rng(1).permutation(569)
    rows = np.concatenate([s["x"] for s in held])
    np.testing.assert_allclose(rows, cancer[np.sort(order[50:60])].astype(np.float32), rtol=1e-6)
    images = open_source(write_pngs(tmp_path / "images", digits), [DIGIT], image=ImageOptions(scale=16.0))
    calib, held = images.split(30, 5)
    assert len(list(calib)) == 30 and len(list(held)) == 5 and calib.preprocessing == images.preprocessing


# -- checks against the specs ------------------------------------------------------------------------------

def test_samples_are_checked_against_the_specs(tmp_path, cancer):
    np.save(tmp_path / "c.npy", cancer)
    with pytest.raises(SpecError, match=rf"c.npy, sample 0: input 'x' expects shape {shape('batch', 20)}, found {shape(1, 30)}"):
        next(iter(open_source(tmp_path / "c.npy", [TensorSpec("x", ("batch", 20))])))
    with pytest.raises(SpecError, match=rf"expects shape {shape('batch', 30, 1)}, found {shape(1, 30)}"):
        next(iter(open_source(tmp_path / "c.npy", [TensorSpec("x", ("batch", 30, 1))])))
    with pytest.raises(SpecError, match="expects dtype int64, found float64"):
        next(iter(open_source(tmp_path / "c.npy", [TensorSpec("x", ("batch", 30), "int64")])))
    assert next(iter(open_source(tmp_path / "c.npy", [TensorSpec("x", ("n", "k"))])))["x"].shape == (1, 30)
    np.save(tmp_path / "ints.npy", np.arange(60).reshape(2, 30))
    assert next(iter(open_source(tmp_path / "ints.npy", [TABLE])))["x"].dtype == np.float32


def test_errors_name_the_file_row_or_item(tmp_path, cancer, digits):
    folder = tmp_path / "arrays"
    folder.mkdir()
    np.save(folder / "a.npy", cancer[:3])
    np.save(folder / "b.npy", cancer[:3, :10])
    with pytest.raises(SpecError, match=r"b.npy, sample 0: input 'x' expects shape"):
        list(open_source(folder, [TABLE]))
    pd.DataFrame({"x": ["1.5", "2", "oops"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(SpecError, match="t.csv, row 1: input 'x' expects dtype float32, found text"):
        list(open_source(tmp_path / "t.csv", [INDEX]))
    two = [TensorSpec("a", ("batch", 1)), TensorSpec("b", ("batch", 1))]
    with pytest.raises(SpecError, match=rf"item 1, sample 0: no array for input 'b' \(expected shape {shape('batch', 1)}, float32"):
        list(open_source(lambda: [{"a": np.ones((2, 1)), "b": np.ones((2, 1))}, {"a": np.ones((2, 1))}], two))
    with pytest.raises(SpecError, match="different numbers of samples"):
        open_source(lambda: [{"a": np.ones((2, 1)), "b": np.ones((3, 1))}], two)


# -- errors ------------------------------------------------------------------------------------------------------

def test_missing_and_unknown_paths(tmp_path):
    with pytest.raises(InputError, match="no such calibration data"):
        open_source(tmp_path / "nothing.npz", [TABLE])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"\.npy, \.npz, \.csv"):
        open_source(tmp_path / "notes.txt", [TABLE])
    (tmp_path / "loader.py").write_text("")
    with pytest.raises(InputError, match="loader.py:FUNCTION"):
        open_source(tmp_path / "loader.py", [TABLE])
    with pytest.raises(InputError, match="a path, file.py:function or a callable"):
        open_source([{"x": np.zeros((1, 30))}], [TABLE])


def test_empty_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .npy/.npz arrays or PNG/JPEG images"):
        open_source(tmp_path / "empty", [TABLE])
    np.save(tmp_path / "none.npy", np.zeros((0, 30)))
    with pytest.raises(InputError, match="none.npy holds no calibration samples"):
        open_source(tmp_path / "none.npy", [TABLE])
    (tmp_path / "header.csv").write_text("x\n")
    with pytest.raises(InputError, match="header.csv holds no calibration samples"):
        open_source(tmp_path / "header.csv", [INDEX])
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(InputError, match="cannot read .*blank.csv as CSV"):
        open_source(tmp_path / "blank.csv", [INDEX])
    with pytest.raises(InputError, match="holds no calibration samples"):
        open_source(lambda: iter(()), [TABLE])


def test_array_file_errors(tmp_path, cancer):
    two = [TensorSpec("a", ("batch", 20)), TensorSpec("b", ("batch", 10))]
    np.save(tmp_path / "c.npy", cancer)
    with pytest.raises(InputError, match="holds one array but the model takes 2 inputs"):
        open_source(tmp_path / "c.npy", two)
    np.savez(tmp_path / "c.npz", a=cancer[:, :20])
    with pytest.raises(InputError, match=r"lacks array\(s\) for input\(s\) 'b' \(it holds: a\)"):
        open_source(tmp_path / "c.npz", two)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a valid .npz"):
        open_source(tmp_path / "junk.npz", two)


def test_image_errors(tmp_path, digits, monkeypatch):
    folder = write_pngs(tmp_path / "images", digits[:3])
    (folder / "004.png").write_bytes(b"this is no image")
    source = open_source(folder, [DIGIT])
    with pytest.raises(InputError, match="cannot read image .*004.png"):
        list(source)
    with pytest.raises(InputError, match="one image input"):
        open_source(folder, [TABLE])
    with pytest.raises(InputError, match="8 channels in NCHW layout.*NHWC"):
        open_source(folder, [TensorSpec("x", ("batch", 8, 8, 1))])
    with pytest.raises(InputError, match="mean has 3 values but the images have 1 channel"):
        open_source(folder, [DIGIT], image=ImageOptions(mean=(0.4, 0.5, 0.6)))
    with pytest.raises(InputError, match="unknown image layout"):
        ImageOptions(layout="CHW")
    np.save(tmp_path / "d.npy", digits[:, None])
    with pytest.raises(InputError, match="image options .* apply to a folder of images"):
        open_source(tmp_path / "d.npy", [DIGIT], image=ImageOptions(scale=16.0))
    (tmp_path / "images" / "x.npy").write_bytes(b"")
    with pytest.raises(InputError, match="mixes arrays"):
        open_source(folder, [DIGIT])
    more = write_pngs(tmp_path / "more", digits[:2])
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(BackendMissing, match="pip install pillow"):
        open_source(more, [DIGIT])


def test_csv_errors(tmp_path, cancer):
    pd.DataFrame({"a": [1.0], "b_0": [2.0]}).to_csv(tmp_path / "ab.csv", index=False)
    specs = [TensorSpec("a", ("batch", 1)), TensorSpec("b", ("batch", 2))]
    with pytest.raises(InputError, match=r"lacks column\(s\) 'b_1' .* \(it has: 'a', 'b_0'\)"):
        open_source(tmp_path / "ab.csv", specs)
    with pytest.raises(InputError, match="a CSV row fits an input of shape"):
        open_source(tmp_path / "ab.csv", [DIGIT])


def test_function_errors(tmp_path, monkeypatch):
    (tmp_path / "loader.py").write_text(LOADER.format(path="unused.npy") + "\ndef tuples():\n    yield (1, 2)\n")
    (tmp_path / "broken.py").write_text("import no_such_module_for_edgeml\n")
    monkeypatch.chdir(tmp_path)
    cases = {
        "missing.py:batches": "no such calibration script: missing.py",
        "a b:c": "neither an existing file or folder nor a function",
        "loader.py:": "neither an existing file or folder nor a function",
        "broken.py:f": "cannot import 'broken.py'.*ModuleNotFoundError",
        "no_such_module_for_edgeml:f": "cannot import 'no_such_module_for_edgeml'",
        "loader.py:nothing": "has no 'nothing'",
        "loader.py:NOT_A_FUNCTION": "is a int, not a function",
        "loader.py:tuples": "loader.py:tuples item 0 is a tuple, not a dict",
        "loader.py:batches": r"calibration function loader.py:batches failed \(FileNotFoundError",
    }
    for reference, message in cases.items():
        with pytest.raises(InputError, match=message):
            open_source(reference, [DIGIT])
    with pytest.raises(InputError, match="returned a int"):
        open_source(lambda: 3, [DIGIT])
    with pytest.raises(InputError, match="returned a dict"):
        open_source(lambda: {"x": np.zeros((1, 1, 8, 8))}, [DIGIT])


def npy_bytes(shape, data: bytes = b"", dtype="<f4") -> bytes:
    """A .npy file whose header claims ``shape`` whatever data follows it."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def test_array_headers_are_checked_against_the_data_they_come_with(tmp_path):
    """A header claiming more than the file holds (10^12 rows, a truncated file) fails before anything is
    allocated or read, for .npy files, stored and compressed .npz members, and sample files alike."""
    import zipfile

    from edgeml.datafiles import read_npy

    (tmp_path / "huge.npy").write_bytes(npy_bytes((10**12, 30), bytes(120)))
    np.save(tmp_path / "cut.npy", np.ones((50, 30), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-7])
    (tmp_path / "negative.npy").write_bytes(npy_bytes((-5, 30)))
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        with zipfile.ZipFile(tmp_path / f"huge{compression}.npz", "w", compression) as archive:
            archive.writestr("x.npy", npy_bytes((10**12, 30), bytes(120)))
    np.savez(tmp_path / "cut.npz", x=np.ones((50, 30), np.float32))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cut.npz").read_bytes()[:-40])
    with pytest.raises(InputError, match="cut.npz is not a valid .npz archive"):
        open_source(tmp_path / "cut.npz", [TABLE])
    for name in ("huge.npy", "cut.npy", "huge0.npz", "huge8.npz"):
        with pytest.raises(InputError, match=rf"{name}.* is truncated or damaged: its header claims a .*30 float32 array"):
            open_source(tmp_path / name, [TABLE])
    for name in ("huge.npy", "cut.npy"):
        with pytest.raises(InputError, match="is truncated or damaged"):
            read_npy(tmp_path / name)
    with pytest.raises(InputError, match="negative.npy is truncated or damaged"):
        open_source(tmp_path / "negative.npy", [TABLE])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="objects.npy holds Python objects, which only pickle can read"):
        read_npy(tmp_path / "objects.npy")
    np.save(tmp_path / "fine.npy", np.arange(6.0).reshape(2, 3))
    assert read_npy(tmp_path / "fine.npy").tolist() == [[0, 1, 2], [3, 4, 5]]


def test_an_endless_function_stops_at_the_sample_limit(monkeypatch):
    monkeypatch.setattr(datafiles, "MAX_FUNCTION_SAMPLES", 50)

    def endless(rows: int):
        while True:
            yield {"x": np.zeros((rows, 30))}

    for rows in (1, 7, 0):  # samples, batches, and empty batches that add no sample
        with pytest.raises(InputError, match="gives more than 50 samples .*MAX_FUNCTION_SAMPLES"):
            open_source(lambda: endless(rows), [TABLE])
    assert len(open_source(lambda: [{"x": np.zeros((50, 30))}], [TABLE])) == 50


def test_only_regular_files_are_read(tmp_path, monkeypatch):
    """A FIFO or a link to /dev/zero would block or never end: they fail at once, named."""
    import os

    os.mkfifo(tmp_path / "pipe.npy")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "loader.py")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="pipe.npy is a named pipe"):
        open_source(tmp_path / "pipe.npy", [TABLE])
    with pytest.raises(InputError, match=r"zero.csv \(a link to /dev/zero\) is a character device"):
        open_source(tmp_path / "zero.csv", [TABLE])
    with pytest.raises(InputError, match="loader.py is a named pipe"):
        open_source("loader.py:samples", [TABLE])
