"""Bad inputs to the edgeml CLI: one table of cases, the fixtures they need, and the rules that judge them.

Shared by the campaign (benchmarks/campaign.py: every case in a subprocess under a timeout) and the tests
(tests/test_bad_inputs_cli.py: a fixed subset, in-process where nothing can hang). A case is an argv with
placeholders (``%FX%`` the fixtures folder, ``%WORK%`` the case's own folder, which is also its current
directory and holds its output folder ``out`` and its TMPDIR ``tmp``), the exit codes that are right for
it, and what its output folder may hold after a failure. The rules, for every case:

- exit 4, any other code outside 0-3, a Traceback or "internal error" in the output: an internal error;
- no exit within the timeout: a hang;
- an exit code the case does not accept (``--atol nan`` passing, ``--budget-ms nan`` "over budget",
  a special file replaced by a regular one): a wrong verdict;
- exit 2 or 3 without exactly one ``error:`` line (click's ``Error:``) as the last thing said: unclean;
- a temporary file left anywhere, anything new beside the output folder after a failure, an output
  folder changed by a failure that was to leave it alone, a manifest listing a file that is missing or
  has another sha256: partial files;
- the marker file a crafted file's payload creates: code execution.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The file a crafted payload creates in the current directory when its code runs.
PWNED = "EDGEML_PWNED"
FX, WORK, OUT = "%FX%", "%WORK%", "%WORK%/out"
NETS = "edgeml_fuzz_nets"  # the module --model-class cases import (from %FX%/py, put on PYTHONPATH)

OK = frozenset({0})
GATE = frozenset({0, 1})  # success, or a failed check or gate
ERR = frozenset({2, 3})  # a clean refusal: bad input, or a missing backend
EITHER = OK | ERR  # success or a clean refusal
NOT_PASS = frozenset({1, 2, 3})  # anything but a pass (NaN data, a budget of 0)
ANY = GATE | ERR

#: Bench settings that keep a run short; a case's own option comes after them and wins.
FAST = ("--warmup", "0", "--warmup-ms", "0", "--runs", "5", "--min-seconds", "0", "--max-seconds", "0.5")
TIMEOUT_S = 60


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: frozenset
    group: str
    #: After a failure the output folder must be "untouched", or "consistent" with its manifest (an INT8
    #: failure keeps the checked FP32 artifact).
    out: str = "untouched"
    #: Made under %WORK% before the run: "fifo:NAME", "dir:NAME", "file:NAME=TEXT", "link:NAME>TARGET",
    #: "device:NAME" (a /dev/full alike, as root only). FIFOs, links and devices must survive the run as they are.
    prepare: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    #: May hang (FIFOs, /dev/zero, absurd sizes): the in-process tests run it in a subprocess.
    slow: bool = False
    #: Named in issue 8.
    issue: bool = False

    def argv_for(self, fixtures: Path, work: Path) -> list[str]:
        return [a.replace(OUT, str(work / "out")).replace(WORK, str(work)).replace(FX, str(fixtures))
                for a in self.argv]

    def env_for(self, fixtures: Path, work: Path) -> dict[str, str]:
        return {k: v.replace(WORK, str(work)).replace(FX, str(fixtures)) for k, v in self.env}


# -- the table ------------------------------------------------------------------------------------------

def _fx(name: str) -> str:
    return f"{FX}/{name}"


CONVERT = ("convert", _fx("tiny.onnx"), "-o", OUT)
INT8 = (*CONVERT, "--int8", "--calib", _fx("calib.npy"))
IMAGES = ("convert", _fx("img.onnx"), "-o", OUT, "--int8", "--calib", _fx("images"))
BENCH = ("bench", _fx("tiny.onnx"), *FAST)
PTH = ("--model-class", f"{NETS}:Net")
SOURCES = {  # commands that load a source model, by the model's kind
    "convert .pth": ("convert", _fx("tiny.pth"), *PTH, "-o", OUT),
    "bench .pth": ("bench", _fx("tiny.pth"), *PTH, *FAST),
    "convert .skops": ("convert", _fx("tiny.skops"), "-o", OUT),
}
FEATURES = {"convert .pth": 20, "bench .pth": 20, "convert .skops": 4}

#: Values every number option meets.
VALUES = ("nan", "inf", "-inf", "1e999", "-1", "0", "1e-320", "1e308", "99999999999", "100000", "", "abc",
          "٢", "²", "1.5")


def _finite_min(low: float, success=OK, huge: float | None = None):
    """A rule: finite and >= low, else refused; above ``huge``, a refusal naming a limit is right too."""
    def rule(x):
        if not math.isfinite(x) or x < low:
            return ERR
        return EITHER | success if huge is not None and x > huge else success
    return rule


def _threads(x):
    """Up to 2 every machine runs; above, a limit per core may refuse (issue 8: 100000 must be refused)."""
    return ERR if x < 1 or x > 1024 else (OK if x <= 2 else EITHER)


def _batch(x):
    return ERR if x < 1 or x > 10**6 else (OK if x <= 4096 else EITHER)


def _budget(x):
    if not math.isfinite(x) or x < 0:
        return ERR
    return NOT_PASS if x == 0 else (EITHER | GATE if x > 1e7 else GATE)


def _percentile(x):
    if not math.isfinite(x) or x < 0 or x > 100:
        return ERR
    return EITHER if x < 1e-6 else OK


def _max_seconds(x):
    """A cap of 0 s (with --min-seconds 0) may run the minimum count or be refused, as may one of hours."""
    return ERR if not math.isfinite(x) or x < 0 else (EITHER if x == 0 or x > 3600 else OK)


def _opset(x):
    return ERR if x < 1 or x > 1000 else EITHER


def _small_positive(x, success):
    """Image scale and std: positive and finite; subnormal or astronomic ones may overflow the pixels."""
    if not math.isfinite(x) or x <= 0:
        return ERR
    return EITHER | success if x < 1e-30 or x > 1e30 else success


def _resize(x):
    if not math.isfinite(x) or x < 1 or x > 65535:
        return ERR
    return EITHER | GATE if x != int(x) or x > 1024 else GATE


@dataclass(frozen=True)
class NumberOption:
    """A number option, the command it is given to, how click parses it, and which values are right."""

    command: str
    base: tuple[str, ...]
    flag: str
    parse: str  # "float", "int", "ints" (a comma list), "floats3" (M[,M,M]), "size" (HxW), "fraction" (10%)
    rule: object  # value -> acceptable exit codes
    extras: tuple[tuple[str, frozenset], ...] = ()  # more values, or generic ones judged otherwise
    issue: tuple[str, ...] = ()  # values named in issue 8


NUMBER_OPTIONS = (
    NumberOption("convert", CONVERT, "--atol", "float", _finite_min(0, GATE, huge=1e6), issue=("nan",)),
    NumberOption("convert", CONVERT, "--rtol", "float", _finite_min(0, GATE, huge=1e6), issue=("nan",)),
    NumberOption("convert", CONVERT, "--opset", "int", _opset),
    NumberOption("convert --int8", INT8, "--calib-samples", "int", _finite_min(1, GATE, huge=10**6)),
    NumberOption("convert --int8", INT8, "--max-accuracy-drop", "float", _finite_min(0, GATE, huge=100)),
    NumberOption("convert images", IMAGES, "--scale", "float", lambda x: _small_positive(x, GATE)),
    NumberOption("convert images", IMAGES, "--mean", "floats3",
                 lambda x: ERR if not math.isfinite(x) else (EITHER | GATE if abs(x) > 1e30 else GATE),
                 extras=(("0.5", GATE), ("0.5,0.5", ERR), ("0.5,0.5,0.5,0.5", ERR), (",", ERR), ("0.5,,0.5", ERR),
                         ("nan,0.5,0.5", ERR), ("0.5;0.5;0.5", ERR))),
    NumberOption("convert images", IMAGES, "--std", "floats3", lambda x: _small_positive(x, GATE),
                 extras=(("0.5", GATE), ("0.5,0.5", ERR), ("0.5,0,0.5", ERR), ("0.5,-1,0.5", ERR), (",", ERR),
                         ("0.5,inf,0.5", ERR), ("0.5,nan,0.5", ERR))),
    NumberOption("convert images", IMAGES, "--resize", "size", _resize,
                 extras=(("8", ERR), ("8x8x8", ERR), ("0x8", ERR), ("8x", ERR), ("x8", ERR), ("8X8", EITHER | GATE),
                         ("99999999999x1", ERR), ("1x99999999999", ERR), ("8,8", ERR), ("-8x8", ERR))),
    NumberOption("bench", BENCH, "--budget-ms", "float", _budget, issue=("nan",)),
    NumberOption("bench", BENCH, "--percentile", "float", _percentile),
    NumberOption("bench", BENCH, "--batch", "ints", _batch, issue=("", "99999999999"),
                 extras=(("1,,2", EITHER), (",", ERR), ("1,0", ERR), ("1,-1", ERR), ("1,8", OK), ("2,٢", EITHER),
                         (" 1", EITHER))),
    NumberOption("bench", BENCH, "--threads", "ints", _threads, issue=("100000",),
                 extras=(("", EITHER), ("1,,2", EITHER), (",", EITHER), ("1,0", ERR), ("1,-1", ERR), ("1,2", OK),
                         ("2,٢", EITHER), (" 1", EITHER))),  # '' may mean the default, as leaving it out does
    NumberOption("bench", BENCH, "--warmup", "int", _finite_min(0, huge=10**4)),
    NumberOption("bench", BENCH, "--warmup-ms", "float", _finite_min(0, huge=10**4), issue=("nan", "inf")),
    NumberOption("bench", BENCH, "--runs", "int", _finite_min(1, huge=10**5)),
    NumberOption("bench", BENCH, "--min-seconds", "float", _finite_min(0, huge=0.5)),
    NumberOption("bench", BENCH, "--max-seconds", "float", _max_seconds),
    NumberOption("bench --baseline", (*BENCH, "--baseline", _fx("baseline.json")), "--max-regression", "fraction",
                 _finite_min(0, GATE, huge=1e6), issue=("nan",),
                 extras=(("nan%", ERR), ("-5%", ERR), ("0%", GATE), ("inf%", ERR), ("%", ERR), ("10%%", EITHER | GATE),
                         ("1e400%", ERR), ("5", GATE), ("0.05", GATE), ("150%", GATE))),
    NumberOption("bench", BENCH, "--seed", "int", _finite_min(0, huge=2**32 - 1), issue=("-1",)),
)


def _parsed(text: str, parse: str) -> list | None:
    """The numbers in ``text`` as the CLI's parser reads them, or None when it cannot."""
    one = int if parse in ("int", "ints") else float
    if parse == "ints":
        parts = [p for p in text.split(",") if p.strip()]
    elif parse == "floats3":
        parts = text.split(",")
    elif parse == "size":
        parts = text.split("x")
    elif parse == "fraction":
        parts = [text.strip().rstrip("%")]
    else:
        parts = [text]
    try:
        return [one(p) for p in parts] or None
    except ValueError:
        return None


def number_expectation(option: NumberOption, text: str) -> frozenset:
    """The exit codes right for ``option`` given ``text``: the rule's for the numbers it holds; a refusal is
    also right for digits other than ASCII ones (Python's int() reads '٢' as 2) and for '_' separators."""
    numbers = _parsed(text, option.parse)
    if numbers is None:
        return ERR
    verdicts = [option.rule(float(n)) for n in numbers]
    expected = ERR if ERR in verdicts else frozenset().union(*verdicts)
    if not text.isascii() or "_" in text:
        expected |= ERR
    return expected


def _value_text(option: NumberOption, value: str) -> str:
    return {"floats3": f"{value},{value},{value}", "size": f"{value}x{value}"}.get(option.parse, value)


#: Values that run long or allocate a lot where they are accepted rather than refused.
HUGE = ("99999999999", "100000", "1e308", "4294967297")


def number_cases() -> list[Case]:
    cases = []
    for option in NUMBER_OPTIONS:
        extras = dict(option.extras)
        values = [(_value_text(option, v), number_expectation(option, _value_text(option, v)), v) for v in VALUES
                  if _value_text(option, v) not in extras]
        values += [(text, expect, text) for text, expect in extras.items()]
        for text, expect, raw in values:
            cases.append(Case(f"{option.command} {option.flag} {text!r}", (*option.base, option.flag, text), expect,
                              "numbers", out="consistent" if "--int8" in option.base else "untouched",
                              slow=raw in HUGE, issue=raw in option.issue and text == raw))
    return cases


def _digits(number: int, zero: str) -> str:
    """``number`` in another script's digits, e.g. Arabic-Indic for zero '٠'."""
    return "".join(chr(ord(zero) + int(d)) for d in str(number))


#: (spec template, acceptable exit codes, named in the issue); {n} is the model's feature count.
SPECS = (
    ("x:1x{n}", OK, False), ("x:17x{n}", OK, True), ("x:64x{n}", OK, False), ("x:1x{n}:float32", OK, False),
    ("x:1x{n}:FP32", OK, False), ("x:batchx{n}", EITHER, False), ("x:?x{n}", EITHER, False),
    ("x:1x{n}:float64", EITHER, False), ("x:1x{n}:float16", EITHER, False), ("x:1x{n}:int64", EITHER, False),
    ("x:1x{n}:bool", EITHER, False), ("x:1x{n}:str", EITHER, False), ("x:nanx{n}", EITHER, False),
    ("a/b:1x{n}", EITHER, False), ("y:1x{n}", EITHER, False), (" x:1x{n} ", EITHER, False),
    ("x:100000x{n}", EITHER, False), ("x:1,{n}", EITHER, False), ("x" * 5000 + ":1x{n}", EITHER, False),
    ("", ERR, False), (" ", ERR, False), ("x", ERR, False), ("x:", ERR, False), (":1x{n}", ERR, False),
    ("1x{n}", ERR, False), ("x:1x{n}:", ERR, False), ("x:1x{n}:float99", ERR, False), ("x:1x{n}:uint16", ERR, False),
    ("x:1x{n}:float32:extra", ERR, False), ("x:0x{n}", ERR, False), ("x:-1x{n}", ERR, False), ("x:1x0", ERR, False),
    ("x:1x{n}x", ERR, False), ("x:1xx{n}", ERR, False), ("x:x{n}", ERR, False), ("x: 1x{n}", EITHER, False),
    ("x:1.0x{n}", ERR, False), ("x:1e1x{n}", ERR, False), ("x:1x{n1}", ERR, False), ("x:1x{n}x1", ERR, False),
    ("x:{n}", EITHER, False), ("x:" + "x".join(["1"] * 64), ERR, False), ("x:1x{arabic}", ERR, True),
    ("x:1x²0", ERR, True), ("x:1x{fullwidth}", ERR, False), ("x:99999999999x99999999", ERR, True),
    ("x:1x{n}x99999999999", ERR, False), ("x:4294967297x{n}", ERR, False), ("é:1x{n}", ERR, False),
    ("x y:1x{n}", ERR, False), ("../x:1x{n}", ERR, False),
)


def spec_cases() -> list[Case]:
    cases = []
    for command, base in SOURCES.items():
        n = FEATURES[command]
        fill = {"n": n, "n1": n + 1, "arabic": _digits(n, "٠"), "fullwidth": _digits(n, "０")}
        for template, expect, issue in SPECS:
            if command == "bench .pth":  # bench parses specs as convert does: its own cases are the issue's
                if not (issue or expect == OK):
                    continue
                expect = expect | ERR if template in ("x:17x{n}", "x:64x{n}") else expect  # a fixed batch, not 1
            spec = template.format(**fill)
            cases.append(Case(f"{command} --input {spec[:60]!r}", (*base, "--input", spec), expect, "specs",
                              slow=any(n in spec for n in HUGE) or "99999999" in spec,
                              issue=issue and command == "convert .pth"))
        spec = f"x:1x{n}"
        cases.append(Case(f"{command} --input twice", (*base, "--input", spec, "--input", spec), ERR, "specs"))
        cases.append(Case(f"{command} --input two inputs", (*base, "--input", spec, "--input", f"y:1x{n}"), ERR,
                          "specs"))
    cases.append(Case("convert .onnx --input", (*CONVERT, "--input", "x:1x20"), ERR, "specs"))
    return cases


def option_cases() -> list[Case]:
    """Model classes, constructor arguments, targets, names, output folders, devices, --against."""
    pth = ("convert", _fx("tiny.pth"), "--input", "x:1x20", "-o", OUT)
    table = [("--model-class", pth, v, e) for v, e in (
        ("builtins:int", ERR), ("os:system", ERR), ("sys:exit", ERR), (f"{NETS}:Nope", ERR), ("nope_mod:Net", ERR),
        (NETS, ERR), (":Net", ERR), (f"{NETS}:", ERR), (f"{NETS}:make_net", EITHER), (f"{NETS}:Raising", ERR),
        (f"{NETS}:Wrong", ERR), (f"{NETS}:Net:Extra", ERR), (f"{NETS}.Net", ERR), (f"{NETS}:CONSTANT", ERR),
        (f"{FX}/py/{NETS}.py:Net", EITHER), (f"{NETS}:Net", OK))]
    table += [("--model-kwargs", (*pth, *PTH), v, e) for v, e in (
        ("{", ERR), ("[]", ERR), ("null", ERR), ('"s"', ERR), ("1", ERR), ('{"hidden": -1}', ERR),
        ('{"hidden": 0}', ERR), ('{"hidden": 99999999999}', ERR), ('{"nope": 1}', ERR), ('{"hidden": NaN}', ERR),
        ('{"hidden": "8"}', ERR), ('{"hidden": 16}', ERR), ("", ERR), ('{"hidden": 1e999}', ERR),
        ('{"hidden": 8}', OK))]
    table += [("--to", CONVERT, v, e) for v, e in (
        ("", ERR), ("onnx", OK), ("ONNX", EITHER), ("onnx,onnx", EITHER), ("tensorrt", ERR), ("coreml", ERR),
        (",", ERR), ("onnx,", EITHER), ("nope", ERR))]
    table += [("--name", CONVERT, v, e) for v, e in (
        ("", ERR), ("../x", ERR), ("a/b", ERR), (".hidden", ERR), ("x" * 300, ERR), ("tiny", OK), ("t i n y", EITHER),
        ("é", EITHER), ("/abs", ERR), (".", ERR), ("..", ERR), ("edgeml", EITHER))]
    table += [("--opset", ("convert", _fx("tiny.pt2"), "-o", OUT), v, e) for v, e in (
        ("1", ERR), ("7", EITHER), ("18", EITHER), ("99", ERR))]
    table += [("--device", BENCH, v, e) for v, e in (
        ("gpu", ERR), ("cuda", ERR), ("cuda:-1", ERR), ("cuda:99999999999", ERR), ("", ERR), ("tensorrt", ERR),
        ("cpu:0", EITHER), ("CPU", EITHER), ("mps", ERR))]
    trt = (*CONVERT, "--to", "onnx,tensorrt")  # without TensorRT: exit 3 after the ONNX, or 2 for a bad option
    table += [("--workspace", trt, v, ERR) for v in ("0", "-1", "abc", "nan", "1e999", "2GiB", "5TiB", "", "2 GiB")]
    table += [("--opt-level", trt, v, ERR) for v in ("-1", "6", "nan", "", "3")]
    table += [("--trt-compat", trt, v, ERR) for v in ("", "all", "version", "both")]
    table += [("--timing-cache", trt, v, ERR) for v in (_fx("images"), "/nonexistent/dir/cache", "", "cache.bin")]
    coreml = ("convert", _fx("tiny.pt2"), "-o", OUT, "--to", "coreml")
    table += [("--palettize", coreml, v, e) for v, e in (("5", ERR), ("", ERR), ("4", EITHER | GATE))]
    table += [("--enumerate", coreml, v, ERR) for v in ("x", "=1", "batch=", "batch=0", "batch=a,b", "nope=1,2",
                                                         "x=1x2x3,", "batch=-1,4")]
    table += [("--enumerate", CONVERT, v, ERR) for v in ("batch=1,4",)]  # --to onnx: no CoreML to take it
    table += [("--option", BENCH, v, ERR) for v in ("x", "=1", "k=", "trt_fp16_enable=1", "a=b=c", "compute_units=ALL")]
    table += [("--against", BENCH, v, e) for v, e in (
        (_fx("bad/empty.onnx"), ERR), (_fx("bad/devzero.onnx"), ERR), (_fx("bad/fifo.onnx"), ERR),
        (_fx("tiny.onnx"), OK), (_fx("tiny.pt2"), EITHER), (_fx("missing.onnx"), ERR), (_fx("img.onnx"), EITHER))]
    # A target that cannot be built here (TensorRT: exit 3) or a compression that fails keeps the checked
    # artifacts made before it: the folder stays consistent with its manifest, not untouched.
    cases = [Case(f"{base[0]} {flag} {value[:60]!r}".replace(FX + "/", ""), (*base, flag, value), expect, "options",
                  out="consistent" if base in (trt, coreml) or "tensorrt" in value else "untouched",
                  slow="dev" in value or "fifo" in value or "99999999999" in value, issue=value == "builtins:int")
             for flag, base, value, expect in table]
    for name, folder, prepare in (("a file", "afile", "file:afile=x"), ("a FIFO", "fifo", "fifo:fifo"),
                                  ("a link to /dev/zero", "zlink", "link:zlink>/dev/zero")):
        cases.append(Case(f"convert -o {name}", ("convert", _fx("tiny.onnx"), "-o", f"{WORK}/{folder}"), ERR,
                          "options", prepare=(prepare,), slow=True))
    cases += [
        Case("convert -o /proc", ("convert", _fx("tiny.onnx"), "-o", "/proc/edgeml-fuzz"), ERR, "options"),
        Case("convert --calib without --int8", (*CONVERT, "--calib", _fx("calib.npy")), ERR, "options"),
        Case("convert --eval-labels without --eval-data", (*INT8, "--eval-labels", _fx("labels/good.npy")), ERR,
             "options"),
        Case("convert .skops --int8", ("convert", _fx("tiny.skops"), "-o", OUT, "--int8"), ERR, "options"),
        Case("convert .skops --fp16", ("convert", _fx("tiny.skops"), "-o", OUT, "--fp16"), ERR, "options"),
        Case("convert .skops --to coreml", ("convert", _fx("tiny.skops"), "-o", OUT, "--to", "coreml"), ERR,
             "options"),
        Case("convert .pt2 --int4 --palettize", ("convert", _fx("tiny.pt2"), "-o", OUT, "--to", "coreml", "--int4",
                                                 "--palettize", "4"), ERR, "options"),
        Case("convert .onnx --trust-pickle", (*CONVERT, "--trust-pickle"), EITHER, "options"),
        Case("convert .pkl without --trust-pickle", ("convert", _fx("evil/evil.pkl"), "-o", OUT), ERR, "options"),
        Case("convert .joblib without --trust-pickle", ("convert", _fx("evil/evil.joblib"), "-o", OUT), ERR, "options"),
        Case("bench .pkl without --trust-pickle", ("bench", _fx("evil/evil.pkl"), *FAST), ERR, "options"),
    ]
    return cases


#: Ways a model file can be broken; the slow ones may block a reader forever.
CRAFTED = ("empty", "truncated", "flipped", "random", "text", "zipjunk", "devzero", "urandom", "fifo", "dir",
           "dangling")
MODEL_SUFFIXES = {".onnx": (), ".pt2": (), ".pt": ("--input", "x:1x20"), ".pth": (*PTH, "--input", "x:1x20"),
                  ".skops": ()}


def file_cases() -> list[Case]:
    cases = []
    for suffix, extra in MODEL_SUFFIXES.items():
        for kind in CRAFTED:
            path = _fx(f"bad/{kind}{suffix}")
            slow = kind in ("devzero", "urandom", "fifo")
            issue = slow and suffix in (".pt2", ".pth", ".skops") and kind in ("devzero", "fifo")
            issue = issue or (kind in ("truncated", "zipjunk") and suffix == ".pt")
            expect = ANY if kind == "flipped" else ERR  # flipped bytes may land in weights (NaN: a failed check)
            cases.append(Case(f"convert {kind}{suffix}", ("convert", path, *extra, "-o", OUT), expect, "files",
                              slow=slow, issue=issue))
            cases.append(Case(f"bench {kind}{suffix}", ("bench", path, *extra, *FAST), expect, "files", slow=slow))
            if suffix == ".onnx":
                cases.append(Case(f"inspect {kind}{suffix}", ("inspect", path), expect, "files", slow=slow))
    cases.append(Case("inspect tiny.pt2", ("inspect", _fx("tiny.pt2")), ERR, "files"))
    cases.append(Case("inspect protobuf without a graph", ("inspect", _fx("bad/nograph.onnx")), EITHER, "files"))
    cases.append(Case("convert protobuf without a graph", ("convert", _fx("bad/nograph.onnx"), "-o", OUT), ERR,
                      "files"))
    return cases


#: Crafted CoreML packages (copies of tests/data/iris_classic.mlpackage): what ``inspect`` and ``bench`` read.
#: Those naming /dev/zero would hang a reader that follows them.
PACKAGES = ("manifest_json", "manifest_list", "manifest_noroot", "manifest_traversal", "manifest_devzero",
            "spec_link_devzero", "spec_empty", "spec_random", "spec_nomain", "spec_deep", "spec_dim_names",
            "weights_fifo", "no_manifest")
SLOW_PACKAGES = ("manifest_devzero", "spec_link_devzero", "weights_fifo")


def package_cases() -> list[Case]:
    cases = []
    for name in PACKAGES:
        path, slow = _fx(f"packages/{name}.mlpackage"), name in SLOW_PACKAGES
        expect = EITHER if name == "spec_dim_names" else ERR  # edgeml's metadata, wrong: ignored, or refused
        cases.append(Case(f"inspect crafted {name}.mlpackage", ("inspect", path), expect, "packages", slow=slow,
                          issue=name == "spec_empty"))
        cases.append(Case(f"bench crafted {name}.mlpackage", ("bench", path, *FAST), ERR, "packages", slow=slow))
    return cases


#: Files whose loading runs the payload if a loader trusts what it should not.
MALICIOUS = ("sample_inputs.pt2", "pickled_weight.pt2", "runstring.skops", "savetxt.skops", "npload.skops",
             "os_system.skops", "payload.pth", "payload.pt")


def malicious_cases() -> list[Case]:
    cases = []
    for name in MALICIOUS:
        extra = MODEL_SUFFIXES[Path(name).suffix]
        cases.append(Case(f"convert crafted {name}", ("convert", _fx(f"evil/{name}"), *extra, "-o", OUT), ERR,
                          "code", issue=True))
        cases.append(Case(f"bench crafted {name}", ("bench", _fx(f"evil/{name}"), *extra, *FAST), ERR, "code"))
    return cases


#: Data files, by name under %FX%/d<features>/, and whether they hold good, poisoned (NaN/Inf) or bad data.
GOOD_DATA = ("good.npy", "good.npz", "good.csv", "gooddir", "fortran.npy", "gen.py:good")
POISONED_DATA = ("nan.npy", "inf.npy", "nan.csv", "shortrow.csv", "nan.npz", "gen.py:nans")
EITHER_DATA = ("int64.npy", "float64.npy", "bool.npy", "rank3.npy", "wrongkey.npz")
BAD_DATA = ("complex.npy", "str.npy", "pickled.npy", "wrongshape.npy", "zero_rows.npy", "scalar.npy",
            "truncated.npy", "truncdata.npy", "bigheader.npy", "badmagic.npy", "empty.npy", "truncated.npz",
            "pickled.npz", "zipjunk.npz", "empty.csv", "headeronly.csv", "text.csv", "ragged.csv", "devzero.npy",
            "fifo.npy", "devzero.csv", "fifo.csv", "urandom.npy", "emptydir", "fifodir", "dangling.npy",
            "missing.npy", "gen.py:raises", "gen.py:exits", "gen.py:nothing", "gen.py:nope", "gen.py:strings",
            "nofile.py:fn", "os:getcwd")
SLOW_DATA = ("devzero", "fifo", "urandom", "gen.py:forever", "bigheader")
#: Where data goes: (name, argv before the value, features, expectation for good and for poisoned data, out rule).
DATA_FLAGS = (
    ("convert --data", (*CONVERT, "--data"), 20, OK, NOT_PASS, "untouched"),
    ("convert --calib", (*CONVERT, "--int8", "--calib"), 20, GATE, NOT_PASS, "consistent"),
    ("convert --eval-data", (*INT8, "--eval-data"), 20, GATE, NOT_PASS, "consistent"),
    ("bench --data", (*BENCH, "--data"), 20, OK, EITHER, "untouched"),
    ("convert .skops --sample", ("convert", _fx("tiny.skops"), "-o", OUT, "--sample"), 4, OK, NOT_PASS, "untouched"),
)
LABELS = (("good.npy", GATE), ("good.csv", GATE), ("nan.npy", ERR), ("float.npy", ERR), ("negative.npy", EITHER | GATE),
          ("short.npy", ERR), ("column.npy", EITHER | GATE), ("str.npy", ERR), ("pickled.npy", ERR), ("empty.npy", ERR),
          ("truncated.npy", ERR), ("bigheader.npy", ERR), ("fifo.npy", ERR), ("devzero.npy", ERR),
          ("huge.npy", EITHER | GATE))


def data_cases() -> list[Case]:
    cases = []
    for name, base, n, good, poisoned, out in DATA_FLAGS:
        reduced = name.endswith(("--sample", "--eval-data"))
        for data in (*GOOD_DATA, *POISONED_DATA, *EITHER_DATA, *BAD_DATA, "gen.py:forever"):
            if reduced and (":" in data or data.startswith(("devzero.csv", "fifo.csv", "urandom", "gooddir"))):
                continue  # the function sources, and a second copy of the special files, once is enough
            expect = (good if data in GOOD_DATA else poisoned if data in POISONED_DATA else
                      EITHER | good if data in EITHER_DATA else ANY if data == "gen.py:forever" else ERR)
            if name.endswith("--sample") and data.endswith((".npz", "dir")):
                expect = ERR  # --sample takes .csv or .npy
            value = data if data.startswith(("nofile", "os:")) else _fx(f"d{n}/{data}")
            cases.append(Case(f"{name} {data}", (*base, value), expect, "data", out=out,
                              slow=any(s in data for s in SLOW_DATA),
                              issue=(data == "nan.npy" and name in ("convert --data", "convert --calib"))
                              or name == "convert --calib"
                              and data in ("truncated.npy", "truncated.npz", "bigheader.npy")
                              or data == "pickled.npy" and name == "convert .skops --sample"))
    for data, expect in LABELS:
        cases.append(Case(f"convert --eval-labels {data}",
                          (*INT8, "--eval-data", _fx("calib.npy"), "--eval-labels", _fx(f"labels/{data}")), expect,
                          "data", out="consistent", slow=data.startswith(("fifo", "devzero", "bigheader")),
                          issue=data == "pickled.npy"))
    for folder, expect in (("images", GATE), ("badimages", ERR), ("grayimages", EITHER | GATE)):
        cases.append(Case(f"convert --calib {folder}", ("convert", _fx("img.onnx"), "-o", OUT, "--int8", "--calib",
                                                        _fx(folder)), expect, "data", out="consistent"))
    return cases


#: ONNX models built with onnx.helper, and what bench and convert may answer (inspect may always refuse).
ODD_MODELS = (("fp16", EITHER), ("uint16", EITHER), ("uint64", EITHER), ("bfloat16", EITHER), ("complex64", EITHER),
              ("int8in", EITHER), ("scalar", EITHER), ("noinputs", EITHER), ("zerodim", EITHER), ("huge", ERR),
              ("negdim", EITHER), ("norank", EITHER), ("sequence", EITHER), ("string", EITHER), ("symbolic", EITHER),
              ("manyinputs", EITHER), ("customop", ERR), ("opset999", ERR), ("ir99", ERR), ("nooutputs", ERR),
              ("cycle", ERR), ("hugeinit", ERR), ("extmissing", ERR), ("exttraversal", ERR), ("ext/extdevzero", ERR))
ODD_ISSUE = ("uint16", "uint64", "bfloat16", "scalar", "noinputs", "huge")


def onnx_cases() -> list[Case]:
    cases = []
    for name, run in ODD_MODELS:
        path = _fx(f"models/{name}.onnx")
        slow = name in ("huge", "ext/extdevzero", "hugeinit")
        issue = name in ODD_ISSUE
        cases += [
            Case(f"inspect {name}.onnx", ("inspect", path), EITHER, "onnx", slow=slow),
            Case(f"bench {name}.onnx", ("bench", path, *FAST), run, "onnx", slow=slow, issue=issue),
            Case(f"convert {name}.onnx", ("convert", path, "-o", OUT), run, "onnx", slow=slow),
        ]
        if issue:
            cases.append(Case(f"convert --int8 {name}.onnx", ("convert", path, "-o", OUT, "--int8"), run | GATE,
                              "onnx", out="consistent", slow=slow))  # nothing to quantize may fail the gate
    return cases


#: Baselines: name under %FX%/baselines/ and what bench --baseline may answer.
BASELINES = (("good.json", GATE), ("list.json", ERR), ("object.json", ERR), ("results_number.json", ERR),
             ("results_empty.json", ERR), ("results_strings.json", ERR), ("no_samples.json", ERR),
             ("zeros.json", ERR), ("negative.json", ERR), ("string_samples.json", ERR), ("nan_samples.json", ERR),
             ("empty_samples.json", ERR), ("one_sample.json", ANY), ("huge_samples.json", ANY),
             ("batch_string.json", ERR), ("batch_8.json", ERR), ("threads_string.json", ERR),
             ("artifact_number.json", ERR), ("environment_string.json", ANY), ("samples_dict.json", ERR),
             ("truncated.json", ERR), ("binary.json", ERR), ("empty.json", ERR), ("deep.json", ERR),
             ("fifo.json", ERR), ("devzero.json", ERR), ("dir.json", ERR), ("missing.json", ERR))
BASELINE_ISSUE = ("list.json", "zeros.json", "results_strings.json", "string_samples.json", "artifact_number.json")


def baseline_cases() -> list[Case]:
    return [Case(f"bench --baseline {name}", (*BENCH, "--baseline", _fx(f"baselines/{name}")), expect, "baselines",
                 slow=name.startswith(("fifo", "devzero")), issue=name in BASELINE_ISSUE) for name, expect in BASELINES]


def report_cases() -> list[Case]:
    cases = [
        Case("bench --json into a FIFO", (*BENCH, "--json", f"{WORK}/r.json"), ERR, "reports", prepare=("fifo:r.json",),
             slow=True),
        Case("bench --html to a link to /dev/full", (*BENCH, "--html", f"{WORK}/r.html"), ERR, "reports",
             prepare=("link:r.html>/dev/full",), issue=True),
        Case("bench --junit to a link to /dev/null", (*BENCH, "--junit", f"{WORK}/r.xml"), EITHER, "reports",
             prepare=("link:r.xml>/dev/null",)),
        Case("bench --json in a missing folder", (*BENCH, "--json", f"{WORK}/nodir/r.json"), ERR, "reports"),
        Case("bench --json a folder", (*BENCH, "--json", WORK), ERR, "reports"),
        Case("bench --json ''", (*BENCH, "--json", ""), EITHER, "reports"),  # '' may mean no report
        Case("bench --json", (*BENCH, "--json", f"{WORK}/r.json"), OK, "reports"),
        Case("bench --markdown with GITHUB_STEP_SUMMARY a FIFO", (*BENCH, "--markdown", f"{WORK}/r.md"), EITHER,
             "reports", prepare=("fifo:summary",), env=(("GITHUB_STEP_SUMMARY", f"{WORK}/summary"),), slow=True),
        Case("bench --markdown with GITHUB_STEP_SUMMARY a link to /dev/full", (*BENCH, "--markdown", f"{WORK}/r.md"),
             EITHER, "reports", prepare=("link:summary>/dev/full",), env=(("GITHUB_STEP_SUMMARY", f"{WORK}/summary"),)),
    ]
    if os.geteuid() == 0:  # only root can make a device node; a writer that replaces it breaks the device
        cases.append(Case("bench --markdown to a device", (*BENCH, "--markdown", f"{WORK}/full"), ERR, "reports",
                          prepare=("device:full",), issue=True))
    return cases


def manifest_cases() -> list[Case]:
    contents = (("a list", "file:out/edgeml.json=[]", True), ("{}", "file:out/edgeml.json={}", False),
                ("artifacts a number", 'file:out/edgeml.json={"artifacts": 5}', False),
                ("artifacts of odd items", 'file:out/edgeml.json={"artifacts": [1, "x", null, {"file": 5}]}', False),
                ("garbage", "file:out/edgeml.json=\x00\xff garbage", False), ("empty", "file:out/edgeml.json=", False),
                ("a folder", "dir:out/edgeml.json", True), ("a dangling link", "link:out/edgeml.json>missing", False))
    cases = [Case(f"convert into a folder whose edgeml.json is {name}", CONVERT, EITHER, "manifest", out="consistent",
                  prepare=("dir:out", prepare), issue=issue) for name, prepare, issue in contents]
    cases += [
        Case("convert into a folder whose edgeml.json is a FIFO", CONVERT, EITHER, "manifest", out="consistent",
             prepare=("dir:out", "fifo:out/edgeml.json"), slow=True),
        Case("convert into a folder whose edgeml.json links to /dev/zero", CONVERT, EITHER, "manifest",
             out="consistent", prepare=("dir:out", "link:out/edgeml.json>/dev/zero"), slow=True),
        # a manifest naming a path outside its folder is not edgeml's: refused, never rewritten (exit 2)
        Case("convert --int8 with a manifest listing ../victim", INT8, ERR, "manifest", out="consistent",
             prepare=("file:victim.txt=keep me", "dir:out",
                      'file:out/edgeml.json={"artifacts": [{"file": "../victim.txt", "sha256": "0"},'
                      ' {"file": "tiny.int8.onnx", "sha256": "0"}]}')),
    ]
    return cases


def cases() -> list[Case]:
    table = (number_cases() + spec_cases() + option_cases() + file_cases() + malicious_cases() + data_cases()
             + onnx_cases() + baseline_cases() + report_cases() + manifest_cases() + package_cases())
    ids = [c.id for c in table]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    return table


# -- running one case -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    code: int | None  # None: killed after the timeout
    output: str
    seconds: float = 0.0


def prepare(case: Case, work: Path) -> dict:
    """Make the case's folder (its cwd, ``out`` inside, ``tmp`` for TMPDIR) and what it asks for; returns a
    snapshot of it to judge the run against."""
    if work.exists():
        shutil.rmtree(work)
    (work / "tmp").mkdir(parents=True)
    for item in case.prepare:
        kind, _, spec = item.partition(":")
        if kind == "file":
            name, _, text = spec.partition("=")
            (work / name).write_bytes(text.encode("utf-8", "surrogateescape"))
        elif kind == "dir":
            (work / spec).mkdir(parents=True, exist_ok=True)
        elif kind == "fifo":
            os.mkfifo(work / spec)
        elif kind == "link":
            name, _, target = spec.partition(">")
            os.symlink(target, work / name)
        elif kind == "device":
            os.mknod(work / spec, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # what /dev/full is
    return snapshot(work)


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder``: its kind and, for regular files, a hash; links are not followed."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                found[str(path.relative_to(folder))] = ("link", os.readlink(path))
            elif stat.S_ISREG(mode):
                found[str(path.relative_to(folder))] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                found[str(path.relative_to(folder))] = (stat.S_IFMT(mode), None)
    return found


def _manifest_problems(out: Path, before: dict, after: dict) -> list[str]:
    """A manifest the run wrote must list only present files with their sha256, and every new file in out."""
    key = "out/edgeml.json"
    if after.get(key) == before.get(key) or after.get(key, ("",))[0] != "file":
        return []
    try:
        entries = json.loads((out / "edgeml.json").read_text())["artifacts"]
        listed = {e["file"]: e.get("sha256") for e in entries}
    except (ValueError, KeyError, TypeError) as exc:
        return [f"partial files: out/edgeml.json is not a manifest ({exc})"]
    problems = []
    for name, sha in listed.items():
        path = os.path.normpath(f"out/{name}")
        if not path.startswith("out/"):
            problems.append(f"partial files: the manifest lists {name}, outside the output folder")
        elif after.get(path) != ("file", sha):
            problems.append(f"partial files: the manifest lists {name}, which is "
                            + ("missing" if path not in after else "another file (sha256)"))
    new = [p for p in after if p.startswith("out/") and p not in before and p != key and "lock" not in p.lower()]
    problems += [f"partial files: {p} is not in the manifest" for p in new if p[4:] not in listed]
    return problems


def judge(case: Case, outcome: Outcome, work: Path, before: dict, fixtures: Path) -> list[str]:
    """What went wrong, one line each, prefixed with its kind; empty when the case is handled well."""
    problems = []
    if any(work.rglob(PWNED)) or (fixtures / PWNED).exists():
        problems.append("code execution: a crafted file's payload ran")
    output = outcome.output
    code = outcome.code
    if code is None:
        return problems + [f"hang: no exit within {TIMEOUT_S} s"]
    if code == 4 or code not in (0, 1, 2, 3) or "Traceback (most recent call last)" in output \
            or "internal error" in output:
        problems.append(f"internal error: exit {code}: {_last_line(output)}")
    elif code not in case.expect:
        problems.append(f"wrong verdict: exit {code}, expected {sorted(case.expect)}: {_last_line(output)}")
    elif code in (2, 3):
        said = [line for line in output.splitlines() if line.strip()]
        errors = [line for line in said if line.startswith(("error:", "Error:"))]
        if len(errors) != 1 or said[-1] != errors[0]:
            problems.append(f"unclean message: {len(errors)} error lines, ends with: {_last_line(output)}")
    after = snapshot(work)
    for name, kind in before.items():  # what the case made beside its output folder must survive as it is
        if name.split("/")[0] not in ("out", "tmp") and after.get(name) != kind:
            what = kind[0] if isinstance(kind[0], str) else "special file"
            problems.append(f"wrong verdict: {name} (a {what}) was replaced or changed")
    left = [p for p in after if p not in before and _temporary(p)]
    if left:
        problems.append(f"partial files: temporary files left: {', '.join(left[:3])}")
    if code not in (0, 1):
        new = [p for p in after if p not in before and p.split("/")[0] not in ("out", "tmp") and p != PWNED]
        if new:
            problems.append(f"partial files: a failed run wrote {', '.join(new[:3])}")
        if case.out == "untouched":  # the output folder itself may be made, empty
            changed = sorted(p for p in set(before) | set(after)
                             if p.startswith("out/") and before.get(p) != after.get(p))
            if changed:
                problems.append(f"partial files: a failed run changed {', '.join(changed[:3])}")
    problems += _manifest_problems(work / "out", before, after)
    return problems


def _temporary(path: str) -> bool:
    """Names of half-written files: edgeml's ``.NAME.*.tmp``, its temp folders, anything left in TMPDIR by it."""
    name = path.rsplit("/", 1)[-1]
    if "lock" in name.lower():
        return False
    return name.endswith(".tmp") or (name.startswith(".") and path.startswith("out/")) or (
        path.startswith("tmp/") and "edgeml" in path)


def run_in_process(case: Case, fixtures: Path, work: Path) -> tuple[Outcome, list[str]]:
    """Run ``case`` through click's CliRunner in this process, as the campaign runs it in a subprocess: in
    ``work``, with its own temp folder; an exception that escapes the CLI is an internal error. Only for
    cases that cannot hang (not ``slow``)."""
    import sys
    import tempfile
    import time
    import traceback

    from click.testing import CliRunner

    from edgeml.cli import main

    before = prepare(case, work)
    env = {"GITHUB_STEP_SUMMARY": None, "EDGEML_DEBUG": None, **case.env_for(fixtures, work)}
    saved = os.getcwd(), tempfile.tempdir, list(sys.path)
    os.chdir(work)
    tempfile.tempdir = str(work / "tmp")
    sys.path.insert(0, str(fixtures / "py"))
    start = time.perf_counter()
    try:
        result = CliRunner().invoke(main, case.argv_for(fixtures, work), env=env)
    finally:
        os.chdir(saved[0])
        tempfile.tempdir = saved[1]
        sys.path[:] = saved[2]
    code, output = result.exit_code, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        code, output = 4, output + "".join(traceback.format_exception(result.exception))
    outcome = Outcome(code, output, time.perf_counter() - start)
    return outcome, judge(case, outcome, work, before, fixtures)


def _last_line(output: str) -> str:
    said = [line.strip() for line in output.splitlines() if line.strip()]
    return said[-1][:200] if said else "(no output)"


# -- fixtures -------------------------------------------------------------------------------------------

class _Payload:
    """Pickles to a call that creates the marker file in the current folder: if it exists, code ran."""

    def __reduce__(self):
        return (exec, (f"open({PWNED!r}, 'w').close()",))


def build_fixtures(folder: Path, parts: tuple[str, ...] | None = None) -> Path:
    """What the cases read, under ``folder``: every part, or the ``parts`` named (of ``FIXTURES``, in order).
    All of them take a few seconds; the torch export is the slow part."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, build in FIXTURES.items():
        if parts is None or name in parts:
            build(folder, rng)
    return folder


def _onnx(path: Path, nodes, inputs, outputs, initializers=(), opset: int = 17, ir: int = 8) -> None:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _onnx_models(fx: Path, rng) -> None:
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    def value(name, dtype, shape):
        return h.make_tensor_value_info(name, dtype, shape)

    def cast(dtype, shape=(1, 4)):
        return ([h.make_node("Cast", ["x"], ["y"], to=T.FLOAT)], [value("x", dtype, list(shape))],
                [value("y", T.FLOAT, list(shape))])

    weights = nh.from_array(rng.standard_normal((20, 3)).astype(np.float32), "W")
    bias = nh.from_array(rng.standard_normal(3).astype(np.float32), "B")
    linear = [h.make_node("MatMul", ["x", "W"], ["m"]), h.make_node("Add", ["m", "B"], ["y"])]
    _onnx(fx / "tiny.onnx", linear, [value("x", T.FLOAT, ["batch", 20])], [value("y", T.FLOAT, ["batch", 3])],
          [weights, bias])
    pooled = [h.make_node("GlobalAveragePool", ["x"], ["p"]), h.make_node("Flatten", ["p"], ["f"]),
              h.make_node("MatMul", ["f", "W"], ["y"])]
    _onnx(fx / "img.onnx", pooled, [value("x", T.FLOAT, ["batch", 3, "h", "w"])], [value("y", T.FLOAT, ["batch", 4])],
          [nh.from_array(rng.standard_normal((3, 4)).astype(np.float32), "W")])
    odd = fx / "models"
    identity = [h.make_node("Identity", ["x"], ["y"])]
    for name, dtype in (("uint16", T.UINT16), ("uint64", T.UINT64), ("bfloat16", T.BFLOAT16),
                        ("complex64", T.COMPLEX64), ("int8in", T.INT8)):
        _onnx(odd / f"{name}.onnx", *cast(dtype))
    _onnx(odd / "fp16.onnx", identity, [value("x", T.FLOAT16, ["batch", 20])], [value("y", T.FLOAT16, ["batch", 20])])
    _onnx(odd / "scalar.onnx", [h.make_node("Mul", ["x", "x"], ["y"])], [value("x", T.FLOAT, [])],
          [value("y", T.FLOAT, [])])
    _onnx(odd / "noinputs.onnx", [h.make_node("Constant", [], ["y"], value=nh.from_array(np.ones(3, np.float32)))], [],
          [value("y", T.FLOAT, [3])])
    _onnx(odd / "zerodim.onnx", linear, [value("x", T.FLOAT, [0, 20])], [value("y", T.FLOAT, [0, 3])], [weights, bias])
    _onnx(odd / "huge.onnx", identity, [value("x", T.FLOAT, [10**10, 10**9])], [value("y", T.FLOAT, [10**10, 10**9])])
    _onnx(odd / "negdim.onnx", identity, [value("x", T.FLOAT, [-5, 20])], [value("y", T.FLOAT, [-5, 20])])
    _onnx(odd / "norank.onnx", identity, [value("x", T.FLOAT, None)], [value("y", T.FLOAT, None)])
    _onnx(odd / "sequence.onnx", [h.make_node("SequenceLength", ["x"], ["y"])],
          [h.make_tensor_sequence_value_info("x", T.FLOAT, [1, 4])], [value("y", T.INT64, [])])
    _onnx(odd / "string.onnx", identity, [value("x", T.STRING, ["batch", 1])], [value("y", T.STRING, ["batch", 1])])
    _onnx(odd / "symbolic.onnx", identity, [value("x", T.FLOAT, ["a", "b", "c", "d"])],
          [value("y", T.FLOAT, ["a", "b", "c", "d"])])
    names = [f"x{i}" for i in range(300)]
    _onnx(odd / "manyinputs.onnx", [h.make_node("Sum", names, ["y"])], [value(n, T.FLOAT, [1, 1]) for n in names],
          [value("y", T.FLOAT, [1, 1])])
    _onnx(odd / "customop.onnx", [h.make_node("Frobnicate", ["x"], ["y"], domain="com.example.fuzz")],
          [value("x", T.FLOAT, [1, 4])], [value("y", T.FLOAT, [1, 4])])
    _onnx(odd / "opset999.onnx", identity, [value("x", T.FLOAT, [1, 4])], [value("y", T.FLOAT, [1, 4])], opset=999)
    _onnx(odd / "ir99.onnx", identity, [value("x", T.FLOAT, [1, 4])], [value("y", T.FLOAT, [1, 4])], ir=99)
    _onnx(odd / "nooutputs.onnx", identity, [value("x", T.FLOAT, [1, 4])], [])
    _onnx(odd / "cycle.onnx", [h.make_node("Add", ["x", "z"], ["y"]), h.make_node("Identity", ["y"], ["z"])],
          [value("x", T.FLOAT, [1, 4])], [value("y", T.FLOAT, [1, 4])])
    huge_init = h.make_tensor("W", T.FLOAT, [1, 4], vals=b"\0" * 16, raw=True)
    huge_init.ClearField("dims")
    huge_init.dims.extend([10**6, 10**6])  # 4 TB claimed, 16 bytes given
    _onnx(odd / "hugeinit.onnx", [h.make_node("MatMul", ["x", "W"], ["y"])], [value("x", T.FLOAT, [1, 10**6])],
          [value("y", T.FLOAT, [1, 10**6])], [huge_init])
    for name, location in (("extmissing", "missing.bin"), ("exttraversal", "../../../../../../../../etc/hostname"),
                           ("ext/extdevzero", "zero.bin")):
        external = nh.from_array(np.zeros((20, 3), np.float32), "W")
        external.ClearField("raw_data")
        external.data_location = 1  # EXTERNAL
        external.external_data.add(key="location", value=location)
        _onnx(odd / f"{name}.onnx", [h.make_node("MatMul", ["x", "W"], ["y"])], [value("x", T.FLOAT, [1, 20])],
              [value("y", T.FLOAT, [1, 3])], [external])
    _symlink("/dev/zero", odd / "ext" / "zero.bin")


def _torch_models(fx: Path, rng) -> None:
    import importlib
    import sys

    (fx / "py").mkdir(exist_ok=True)
    (fx / "py" / f"{NETS}.py").write_text(NETS_SOURCE)
    sys.path.insert(0, str(fx / "py"))
    try:
        nets = importlib.import_module(NETS)
    finally:
        sys.path.remove(str(fx / "py"))
    import torch

    torch.manual_seed(0)
    model = nets.Net().eval()
    torch.save(model.state_dict(), fx / "tiny.pth")
    torch.jit.save(torch.jit.script(model), str(fx / "tiny.pt"))
    program = torch.export.export(model, (torch.zeros(2, 20),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(fx / "tiny.pt2"))


NETS_SOURCE = '''"""Modules for edgeml's bad-input cases (--model-class)."""
import torch

CONSTANT = 3


class Net(torch.nn.Module):
    def __init__(self, n_in=20, hidden=8, n_out=3):
        super().__init__()
        self.fc1 = torch.nn.Linear(n_in, hidden)
        self.fc2 = torch.nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Wrong(Net):
    def __init__(self):
        super().__init__(hidden=5)


class Raising(torch.nn.Module):
    def __init__(self):
        raise RuntimeError("this module cannot be built")


def make_net():
    return Net()
'''


def _sklearn_model(fx: Path, rng) -> None:
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    skops.io.dump(LogisticRegression(max_iter=500).fit(X, y), fx / "tiny.skops")


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _symlink(target: str, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    os.symlink(target, link)


def _crafted(fx: Path, rng) -> None:
    bad = fx / "bad"
    bad.mkdir(exist_ok=True)
    for suffix in MODEL_SUFFIXES:
        good = (fx / f"tiny{suffix}").read_bytes()
        middle = len(good) // 2
        contents = {"empty": b"", "truncated": good[:middle], "text": b"hello, model\n",
                    "flipped": good[:middle] + b"\xff" * 64 + good[middle + 64:], "random": rng.bytes(4096)}
        for kind, data in contents.items():
            (bad / f"{kind}{suffix}").write_bytes(data)
        _zip(bad / f"zipjunk{suffix}", {"junk.txt": b"not a model"})
        _symlink("/dev/zero", bad / f"devzero{suffix}")
        _symlink("/dev/urandom", bad / f"urandom{suffix}")
        _symlink(str(fx / "no-such-file"), bad / f"dangling{suffix}")
        _fifo(bad / f"fifo{suffix}")
        (bad / f"dir{suffix}").mkdir(exist_ok=True)
    (bad / "nograph.onnx").write_bytes(b"\x08\x07")  # a ModelProto with only ir_version set


def _packages(fx: Path, rng) -> None:
    """PACKAGES: the iris package with its Manifest.json or its spec broken, each in its own way."""
    from coremltools.proto import Model_pb2

    good = Path(__file__).resolve().parents[1] / "tests" / "data" / "iris_classic.mlpackage"
    manifest = json.loads((good / "Manifest.json").read_text())
    root = manifest["rootModelIdentifier"]
    spec_path = Path("Data") / manifest["itemInfoEntries"][root]["path"]

    def naming(path: str) -> str:
        changed = json.loads(json.dumps(manifest))
        changed["itemInfoEntries"][root]["path"] = path
        return json.dumps(changed)

    program = Model_pb2.Model(specificationVersion=7)
    program.mlProgram.version = 1  # no functions: no main
    deep = Model_pb2.Model(specificationVersion=1)
    inner = deep
    for _ in range(120):  # nested past protobuf's parse depth
        inner = inner.pipeline.models.add()
    named = Model_pb2.Model()
    named.ParseFromString((good / spec_path).read_bytes())
    named.description.metadata.userDefined["edgeml.dim_names"] = '{"X": 5, "Y": [1, 2]}'
    crafted = {"manifest_json": {"Manifest.json": "{not json"}, "manifest_list": {"Manifest.json": "[1, 2]"},
               "manifest_noroot": {"Manifest.json": json.dumps({**manifest, "rootModelIdentifier": "nope"})},
               "manifest_traversal": {"Manifest.json": naming("../../../../../../../etc/passwd")},
               "manifest_devzero": {"Manifest.json": naming("/dev/zero")},
               "spec_empty": {spec_path: b""}, "spec_random": {spec_path: rng.bytes(4096)},
               "spec_nomain": {spec_path: program.SerializeToString()},
               "spec_deep": {spec_path: deep.SerializeToString()},
               "spec_dim_names": {spec_path: named.SerializeToString()}}
    folder = fx / "packages"
    folder.mkdir(exist_ok=True)
    for name in PACKAGES:
        package = folder / f"{name}.mlpackage"
        shutil.rmtree(package, ignore_errors=True)
        shutil.copytree(good, package)
        for relative, content in crafted.get(name, {}).items():
            target = package / relative
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
    (folder / "spec_link_devzero.mlpackage" / spec_path).unlink()
    _symlink("/dev/zero", folder / "spec_link_devzero.mlpackage" / spec_path)
    _fifo(folder / "weights_fifo.mlpackage" / "Data" / "com.apple.CoreML" / "weights.bin")
    (folder / "no_manifest.mlpackage" / "Manifest.json").unlink()


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _torch_payload() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"x": _Payload()}, buffer)
    return buffer.getvalue()


def _malicious(fx: Path, rng) -> None:
    evil = fx / "evil"
    evil.mkdir(exist_ok=True)
    (evil / "evil.pkl").write_bytes(pickle.dumps(_Payload()))
    (evil / "evil.joblib").write_bytes(pickle.dumps(_Payload()))
    (evil / "payload.pth").write_bytes(_torch_payload())
    with zipfile.ZipFile(fx / "tiny.pt2") as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    root = next(n for n in members if n.endswith("archive_format")).rsplit("/", 1)[0]
    sample = {**members, f"{root}/data/sample_inputs/model.pt": _torch_payload()}
    _zip(evil / "sample_inputs.pt2", sample)
    config_name = f"{root}/data/weights/model_weights_config.json"
    config = json.loads(members[config_name])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    weights = {**members, config_name: json.dumps(config).encode(),
               f"{root}/data/weights/{first['path_name']}": _torch_payload()}
    _zip(evil / "pickled_weight.pt2", weights)
    with zipfile.ZipFile(fx / "tiny.pt") as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    data_pkl = next(n for n in members if n.endswith("/data.pkl"))
    _zip(evil / "payload.pt", {**members, data_pkl: pickle.dumps(_Payload(), protocol=2)})
    (evil / "companion.pkl").write_bytes(pickle.dumps(_Payload()))
    code = f"open({PWNED!r}, 'w').close()"
    _skops_call(evil / "runstring.skops", "numpy.testing._private.utils", "runstring", (code, {}))
    _skops_call(evil / "savetxt.skops", "numpy", "savetxt", (PWNED, [1.0]))
    _skops_call(evil / "npload.skops", "numpy", "load", (str(evil / "companion.pkl"), None, True))
    _skops_call(evil / "os_system.skops", "os", "system", (f"touch {PWNED}",))


def _skops_call(path: Path, module: str, function: str, args: tuple) -> None:
    """A .skops file whose top object is ``module.function(*args)``, as skops' ConstructorFromReduceNode."""
    import skops.io

    skops.io.dump(args, path)
    with zipfile.ZipFile(path) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    schema = json.loads(members["schema.json"])
    top = {key: schema.pop(key) for key in ("protocol", "_skops_version") if key in schema}
    call = {"__class__": function, "__module__": module, "__loader__": "ConstructorFromReduceNode",
            "content": schema, "__id__": 1, **top}
    _zip(path, {**members, "schema.json": json.dumps(call).encode()})


def _npy_header(shape: tuple, dtype: str = "<f4") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def _data(fx: Path, rng) -> None:
    for n in (20, 4):
        _data_files(fx / f"d{n}", n, np.random.default_rng(n))
    np.save(fx / "calib.npy", rng.standard_normal((40, 20)).astype(np.float32))
    _labels(fx / "labels", rng)


def _data_files(folder: Path, n: int, rng) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    good = rng.standard_normal((40, n)).astype(np.float32)
    nan, inf = good.copy(), good.copy()
    nan[::3, 1] = np.nan
    inf[::5, 0] = np.inf
    arrays = {"good": good, "nan": nan, "inf": inf, "fortran": np.asfortranarray(good),
              "int64": (good * 10).astype(np.int64), "float64": good.astype(np.float64), "bool": good > 0,
              "rank3": good.reshape(40, 1, n), "complex": good.astype(np.complex64), "str": np.full((40, n), "a"),
              "wrongshape": np.zeros((40, n + 1), np.float32),
              "zero_rows": np.zeros((0, n), np.float32), "scalar": np.float32(1)}
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    np.save(folder / "pickled.npy", np.array([_Payload()], dtype=object), allow_pickle=True)
    data = (folder / "good.npy").read_bytes()
    (folder / "truncated.npy").write_bytes(data[:100])
    (folder / "truncdata.npy").write_bytes(data[: len(data) // 2])
    (folder / "bigheader.npy").write_bytes(_npy_header((10**12, n)) + good[:1].tobytes())
    (folder / "badmagic.npy").write_bytes(b"\x93NUMPX" + data[6:])
    (folder / "empty.npy").write_bytes(b"")
    np.savez(folder / "good.npz", x=good)
    np.savez(folder / "nan.npz", x=nan)
    np.savez(folder / "wrongkey.npz", z=good)
    np.savez(folder / "pickled.npz", x=np.array([_Payload()], dtype=object))
    data = (folder / "good.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(data[: len(data) // 2])
    _zip(folder / "zipjunk.npz", {"junk.txt": b"not arrays"})
    header = ",".join(f"f{i}" for i in range(n))
    np.savetxt(folder / "good.csv", good, delimiter=",", header=header, comments="")
    np.savetxt(folder / "nan.csv", nan, delimiter=",", header=header, comments="")
    (folder / "empty.csv").write_bytes(b"")
    (folder / "headeronly.csv").write_text(header + "\n")
    (folder / "text.csv").write_text(header + "\n" + "\n".join(",".join(["abc"] * n) for _ in range(5)) + "\n")
    (folder / "shortrow.csv").write_text(header + "\n1,2\n")  # missing cells read as NaN
    (folder / "ragged.csv").write_text(header + "\n" + ",".join(["1"] * n) + "\n" + ",".join(["1"] * (n + 3)) + "\n")
    for name, target in (("devzero.npy", "/dev/zero"), ("devzero.csv", "/dev/zero"), ("urandom.npy", "/dev/urandom"),
                         ("dangling.npy", str(folder / "no-such-file"))):
        _symlink(target, folder / name)
    for name in ("fifo.npy", "fifo.csv"):
        _fifo(folder / name)
    for name in ("gooddir", "emptydir", "fifodir"):
        (folder / name).mkdir(exist_ok=True)
    for i in range(4):
        np.save(folder / "gooddir" / f"part{i}.npy", good[i * 10:(i + 1) * 10])
    _fifo(folder / "fifodir" / "a.npy")
    (folder / "gen.py").write_text(GEN_SOURCE.format(n=n))


GEN_SOURCE = '''"""Data functions for edgeml's bad-input cases (file.py:function)."""
import itertools
import sys

import numpy as np

N = {n}


def good():
    rng = np.random.default_rng(0)
    return [{{"x": rng.standard_normal((1, N)).astype(np.float32)}} for _ in range(20)]


def nans():
    return [{{"x": np.full((1, N), np.nan, np.float32)}} for _ in range(20)]


def forever():
    rng = np.random.default_rng(0)
    return ({{"x": rng.standard_normal((1, N)).astype(np.float32)}} for _ in itertools.count())


def raises():
    raise RuntimeError("the data server is down")


def exits():
    sys.exit(0)


def nothing():
    return None


def strings():
    return ["abc"] * 5
'''


def _labels(folder: Path, rng) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    good = rng.integers(0, 3, 40)
    arrays = {"good": good, "nan": np.where(good == 0, np.nan, good), "float": good + 0.5, "negative": -good,
              "short": good[:39], "column": good.reshape(40, 1), "str": good.astype(str),
              "huge": np.full(40, np.iinfo(np.int64).max)}
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    np.savetxt(folder / "good.csv", good, fmt="%d")
    np.save(folder / "pickled.npy", np.array([_Payload()], dtype=object), allow_pickle=True)
    (folder / "empty.npy").write_bytes(b"")
    (folder / "truncated.npy").write_bytes((folder / "good.npy").read_bytes()[:90])
    (folder / "bigheader.npy").write_bytes(_npy_header((10**12,), "<i8") + good[:1].tobytes())
    _fifo(folder / "fifo.npy")
    _symlink("/dev/zero", folder / "devzero.npy")


def _images(fx: Path, rng) -> None:
    from PIL import Image

    for name, mode in (("images", "RGB"), ("grayimages", "L"), ("badimages", "RGB")):
        (fx / name).mkdir(exist_ok=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (8, 8, 3) if mode == "RGB" else (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(fx / name / f"{i}.png")
    broken = fx / "badimages" / "5.png"
    broken.write_bytes(broken.read_bytes()[:40])


def _baselines(fx: Path, rng) -> None:
    """A real baseline (bench --json --save-samples of tiny.onnx) and broken copies of it."""
    from click.testing import CliRunner

    from edgeml.cli import main

    folder = fx / "baselines"
    folder.mkdir(exist_ok=True)
    good = folder / "good.json"
    result = CliRunner().invoke(main, ["bench", str(fx / "tiny.onnx"), *FAST, "--json", str(good), "--save-samples"])
    assert result.exit_code == 0 and good.is_file(), f"the baseline run failed: {result.output[-2000:]}"
    shutil.copy(good, fx / "baseline.json")
    document = json.loads(good.read_text())

    def variant(name, change):
        copy = json.loads(json.dumps(document))
        change(copy)
        (folder / name).write_text(json.dumps(copy))

    def entry(key, value):
        return lambda d: d["results"][0].__setitem__(key, value)

    samples = len(document["results"][0]["samples_ns"])
    variant("results_number.json", lambda d: d.__setitem__("results", 5))
    variant("results_empty.json", lambda d: d.__setitem__("results", []))
    variant("results_strings.json", lambda d: d.__setitem__("results", ["x", 1]))
    variant("no_samples.json", lambda d: d["results"][0].pop("samples_ns"))
    variant("zeros.json", entry("samples_ns", [0] * samples))
    variant("negative.json", entry("samples_ns", [-1000] * samples))
    variant("string_samples.json", entry("samples_ns", ["fast"] * samples))
    variant("nan_samples.json", entry("samples_ns", [math.nan] * samples))
    variant("empty_samples.json", entry("samples_ns", []))
    variant("one_sample.json", entry("samples_ns", [1000]))
    variant("huge_samples.json", entry("samples_ns", [1e300] * samples))
    variant("samples_dict.json", entry("samples_ns", {"a": 1}))
    variant("batch_string.json", entry("batch", "1"))
    variant("batch_8.json", entry("batch", 8))
    variant("threads_string.json", entry("threads", "x"))
    variant("artifact_number.json", entry("artifact", 5))
    variant("environment_string.json", lambda d: d.__setitem__("environment", "x"))
    (folder / "list.json").write_text("[]")
    (folder / "object.json").write_text("{}")
    text = good.read_text()
    (folder / "truncated.json").write_text(text[: len(text) // 2])
    (folder / "binary.json").write_bytes(bytes(range(256)) * 4)
    (folder / "empty.json").write_text("")
    (folder / "deep.json").write_text("[" * 100000 + "]" * 100000)
    _fifo(folder / "fifo.json")
    _symlink("/dev/zero", folder / "devzero.json")
    (folder / "dir.json").mkdir(exist_ok=True)


#: The fixtures' parts, in the order they build (crafted and malicious files copy the good models).
FIXTURES = {"onnx": _onnx_models, "torch": _torch_models, "sklearn": _sklearn_model, "crafted": _crafted,
            "malicious": _malicious, "data": _data, "images": _images, "baselines": _baselines, "packages": _packages}


def common_env(fixtures: Path, work: Path) -> dict[str, str]:
    """What every case's process gets: its own TMPDIR, the fixtures importable, no CI summary file."""
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_STEP_SUMMARY", "EDGEML_DEBUG")}
    path = os.pathsep.join(filter(None, [str(fixtures / "py"), env.get("PYTHONPATH")]))
    env.update(TMPDIR=str(work / "tmp"), PYTHONPATH=path, COLUMNS="160")
    return env
