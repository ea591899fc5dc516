"""The ``edgeml`` command: parse, call one API function, render. No logic lives here.

Exit codes: 0 success, 1 a failed check or gate, 2 bad usage or input, 3 a missing backend or
platform, 4 an internal error (a bug: please report it with the --debug output).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback

import click

from .backends import BACKENDS
from .calibration.targets import DEFAULT_TARGET as DEFAULT_INT8_TARGET, TARGETS as INT8_TARGETS
from .backends.coreml import MIN_TARGETS as COREML_TARGETS
from .errors import EXIT_GATE_FAILED, EXIT_INTERNAL, EdgeMLError, InputError
from .model_meta import TASKS


#: ``ctx.meta`` key: the exit code a command has earned before printing its results, kept when the reader of
#: stdout leaves early (a failed gate stays failed under ``| head``).
EXIT_AFTER_OUTPUT = "edgeml.exit_after_output"


def _err(line: str) -> None:
    """A line on stderr; a closed stderr (``2>&1 | head``) must not stop the work or change its verdict."""
    try:
        click.echo(line, err=True)
    except BrokenPipeError:
        pass


def _say(message: str) -> None:
    _err(f"  {message}")


class _Group(click.Group):
    """Turns expected errors into one line and an exit code; --debug shows the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeMLError as exc:
            self._fail(ctx, f"error: {exc}", exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            self._fail(ctx, "interrupted; nothing half-written was left behind", 130)
        except BrokenPipeError:
            _quiet_closed_pipe()
            ctx.exit(ctx.meta.get(EXIT_AFTER_OUTPUT, 0))
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            self._fail(ctx, f"internal error: {type(exc).__name__}: {exc} (a bug in edgeml: rerun with --debug and report it)", EXIT_INTERNAL)

    @staticmethod
    def _fail(ctx, message: str, code: int):
        if ctx.params.get("debug") or os.environ.get("EDGEML_DEBUG"):
            traceback.print_exc()
        _err(" ".join(message.split()))
        ctx.exit(code)


class _Sections(click.Command):
    """A command whose --help lists its options under headings, so that a long list reads like a page.

    ``sections``: (heading, flags) pairs in the order shown; every option is in exactly one, which is checked
    when the command is made (an option added without a section fails at import, in every test). --help
    itself comes last, under the usual "Options"."""

    def __init__(self, *args, sections: tuple[tuple[str, tuple[str, ...]], ...], **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = sections
        by_flag = {flag: param for param in self.params for flag in param.opts}
        declared = [flag for _, flags in sections for flag in flags]
        unknown = [flag for flag in declared if flag not in by_flag]
        placed = [by_flag[flag] for flag in declared if flag in by_flag]
        twice = {p.opts[-1] for p in placed if placed.count(p) > 1}
        missing = [p.opts[-1] for p in self.params if isinstance(p, click.Option) and p not in placed]
        if unknown or twice or missing:
            raise ValueError(f"edgeml {self.name}: help sections name unknown options {unknown}, list {sorted(twice)} "
                             f"twice, leave out {missing}")

    def format_options(self, ctx, formatter) -> None:
        by_flag = {flag: param for param in self.get_params(ctx) for flag in param.opts}
        placed = set()
        for heading, flags in self.sections:
            params = [by_flag[flag] for flag in flags]
            placed.update(params)
            with formatter.section(heading):
                formatter.write_dl([r for r in (p.get_help_record(ctx) for p in params) if r])
        rest = [r for r in (p.get_help_record(ctx) for p in self.get_params(ctx)
                            if isinstance(p, click.Option) and p not in placed) if r]
        if rest:
            with formatter.section("Options"):
                formatter.write_dl(rest)


def _tolerance(ctx, param, values):
    """--atol X (every output), or --atol NAME=X once per output (the others keep the default): the API's
    float or mapping."""
    if not values:
        return None
    named = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            number = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r}: give a number, e.g. 1e-3, or NAME=NUMBER for one output") from None
        if name in named:
            raise click.BadParameter(f"{value!r}: {'output ' + repr(name) if name else 'the tolerance'} is given twice")
        named[name] = number
    if "" in named and len(named) > 1:
        raise click.BadParameter("give one number for every output, or NAME=NUMBER once per output, not both")
    return named[""] if "" in named else named


def _quiet_closed_pipe() -> None:
    """A reader that stopped early (``| head``) is not an error: point stdout at /dev/null so that the
    interpreter's final flush does not fail again, and end quietly as Unix tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _print_table(table) -> None:
    """A rich table on stdout: fitted to a terminal, at its full natural width in a pipe or CI log (never
    truncated there: a log has no width to fit)."""
    from rich.console import Console
    from rich.measure import Measurement

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich's own handling exits 1; edgeml's keeps the verdict
            raise BrokenPipeError

    console = _Console()
    if not sys.stdout.isatty():  # not console.is_terminal, which FORCE_COLOR (set by many CI systems) makes true
        width = Measurement.get(console, console.options.update(width=10_000), table).maximum
        console = _Console(width=width)
    console.print(table)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks of errors (also: EDGEML_DEBUG=1).")
@click.version_option(package_name="edgeml", prog_name="edgeml")
def main(debug: bool):
    """Take trained PyTorch and scikit-learn models to the edge: export, check, benchmark.

    \b
      edgeml demo                                       the whole job on built-in examples
      edgeml convert model.pt2 -o build/                PyTorch ExportedProgram -> checked ONNX
      edgeml convert model.skops --sample rows.csv      scikit-learn -> checked ONNX
      edgeml bench build/model.onnx --budget-ms 100     latency gate for CI (exit 1 when over)
      edgeml inspect build/model.onnx                   inputs, outputs, ops, size, precision
      edgeml verify build/                              the folder still holds what edgeml.json lists

    Exit codes: 0 ok, 1 failed check or gate, 2 bad usage or input, 3 missing backend, 4 internal error.
    """


def _source_options(command):
    """Options that say how to load a source model, shared by convert and bench."""
    options = [
        click.option("--input", "inputs", multiple=True, metavar="NAME:DIMS[:DTYPE]",
                     help="An input spec, once per input, e.g. x:1x3x224x224 or ids:1x128:int64; a dynamic dim "
                          "with a range: x:1..32x3x224x224 or x:batch=1..32x3x224x224 (MIN..OPT..MAX sets the opt)."),
        click.option("--sample", type=click.Path(dir_okay=False),
                     help="scikit-learn: a .csv/.npy of a few rows giving the columns."),
        click.option("--model-class", metavar="MODULE:CLASS", help="State dicts: the nn.Module class to load the weights into."),
        click.option("--model-kwargs", metavar="JSON", help="State dicts: constructor arguments, e.g. '{\"hidden\": 64}'."),
        click.option("--trust-pickle", is_flag=True,
                     help="Allow pickle files (.pkl, .joblib, whole torch modules): they run code when loaded."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


CONVERT_SECTIONS = (
    ("Source (what MODEL is and how to load it)",
     ("--input", "--sample", "--model-class", "--model-kwargs", "--trust-pickle", "--task", "--trust-remote-code")),
    ("Export (MODEL to ONNX, and with --fp16 an FP16 copy checked against the source)",
     ("--to", "--dynamic-batch", "--opset", "--no-optimize", "--no-fuse", "--fp16")),
    ("Check (every artifact against its source, on the same inputs)",
     ("--data", "--shape", "--no-check", "--atol", "--rtol")),
    ("INT8 (--int8: calibration, the gate against FP32; --mean/--std/--scale: image normalization, also for a "
     "CoreML image input)",
     ("--int8", "--calib", "--calib-samples", "--calib-method", "--int8-target", "--max-accuracy-drop", "--min-cosine",
      "--eval-data", "--eval-labels", "--resize", "--mean", "--std", "--layout", "--scale")),
    ("CoreML (with --to coreml: an .mlpackage built from the PyTorch source; --int8, --int4 or --palettize also "
     "write NAME.<compression>.mlpackage)", ("--precision", "--min-target", "--int4", "--palettize", "--enumerate")),
    ("TensorRT (with --to tensorrt: an engine built on this machine's NVIDIA GPU from the checked ONNX)",
     ("--workspace", "--timing-cache", "--opt-level", "--trt-compat")),
    ("Output (where the artifacts and edgeml.json go)", ("--output", "--name")),
)


@main.command(cls=_Sections, sections=CONVERT_SECTIONS)
@click.argument("model", type=click.Path())
@click.option("--to", "to", default="onnx", show_default=True,
              help=f"Targets, comma-separated: {', '.join(BACKENDS)} (ort and tensorrt from the checked ONNX "
                   "artifact, and from the INT8 and FP16 ones; coreml from the PyTorch source).")
@click.option("-o", "--output", "output_dir", default="build", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the artifacts and edgeml.json.")
@_source_options
@click.option("--dynamic-batch", is_flag=True, help="Make the first dimension of every input symbolic.")
@click.option("--data", help="Real inputs for the check: .npy, .npz, .csv, a folder of them or of images, file.py:function.")
@click.option("--shape", "shapes", multiple=True, metavar="DIM=SIZE|MIN..MAX",
              help="Size of a symbolic dim in generated check inputs, e.g. sequence=128, or its range, recorded in "
                   "the artifact, e.g. batch=1..32 (repeatable).")
@click.option("--task", type=click.Choice(list(TASKS)),
              help="What the model does; Hugging Face folders: picks the head (default: from config.json). "
                   "Classifier tasks make the INT8 gate judge labels.")
@click.option("--trust-remote-code", is_flag=True,
              help="Hugging Face folders: allow a config's auto_map, which runs code from the folder.")
@click.option("--no-optimize", is_flag=True, help="Skip the onnxslim optimization pass.")
@click.option("--no-fuse", is_flag=True,
              help="Skip onnxruntime's transformer fusions (Attention, SkipLayerNormalization...): plain ONNX ops only.")
@click.option("--no-check", is_flag=True, help="Skip the check against the source (the artifact is marked unverified).")
@click.option("--atol", multiple=True, callback=_tolerance, metavar="X|NAME=X",
              help="Absolute tolerance of the check: one number for every output, or NAME=X once per output, the "
                   "others at the default (fp32 1e-4, fp16 1e-2 times each row's largest |value|).")
@click.option("--rtol", multiple=True, callback=_tolerance, metavar="X|NAME=X",
              help="Relative tolerance of the check, as --atol (fp32 default 1e-3, fp16 1e-2).")
@click.option("--opset", type=int, help="ONNX opset (default: the exporter's choice).")
@click.option("--name", help="Artifact file name without suffix (default: the model file's name).")
@click.option("--int8", is_flag=True,
              help="Also write NAME.int8.onnx: static INT8 from --calib data, else dynamic INT8; with --to coreml also "
                   "NAME.int8.mlpackage (int8 weights) or, with --calib, NAME.w8a8.mlpackage (iOS17).")
@click.option("--fp16", is_flag=True,
              help="Also write NAME.fp16.onnx: FP16 weights and compute, float32 inputs/outputs; for GPUs and TensorRT. "
                   "Nodes that lose accuracy in FP16 stay FP32.")
@click.option("--calib", metavar="DATA",
              help="Calibration data: .npy, .npz, a folder of them or of images, a .csv, or file.py:function / module:function.")
@click.option("--calib-samples", type=int, default=128, show_default=True, help="Samples to calibrate on (a seeded subset).")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--int8-target", type=click.Choice(list(INT8_TARGETS)), default=DEFAULT_INT8_TARGET,
              show_default=True,
              help="The device the INT8 model is for; it alone fixes the recipe: x86 (any x86-64 CPU: 7-bit weights, "
                   "exact on AVX2 and VNNI), x86-vnni (VNNI/AMX CPUs only: 8-bit weights), arm64 (signed int8), "
                   "tensorrt (symmetric activations; needs --calib).")
@click.option("--max-accuracy-drop", type=float, default=1.0, show_default=True,
              help="Classifiers: points of accuracy (with --eval-labels) or of label agreement INT8 may lose against FP32.")
@click.option("--min-cosine", type=float,
              help="INT8 gate for models that are not classifiers: the lowest cosine to FP32 any sample may have "
                   "(default 0.99).")
@click.option("--eval-data", help="Inputs to judge INT8 on, any --calib kind (default: --data, else held-out calibration samples).")
@click.option("--eval-labels", type=click.Path(dir_okay=False), help="Integer labels of --eval-data (.npy or .csv): judge the accuracy drop.")
@click.option("--resize", metavar="HxW", help="Images: resize to this (default: the model input's size).")
@click.option("--mean", metavar="M[,M,M]",
              help="Images: per-channel mean, after --scale, e.g. 0.485,0.456,0.406; with --to coreml the package "
                   "takes images (pixels) and normalizes them itself.")
@click.option("--std", metavar="S[,S,S]", help="Images: per-channel std, after --scale, e.g. 0.229,0.224,0.225.")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW", show_default=True, help="Images: tensor layout.")
@click.option("--scale", type=float, help="Images: pixel values are divided by this (default 255).")
@click.option("--precision", type=click.Choice(["fp16", "fp32"]),
              help="CoreML compute precision (default fp16, what the Neural Engine runs).")
@click.option("--min-target", type=click.Choice(list(COREML_TARGETS)),
              help="Oldest OS the CoreML package runs on (default iOS16, the first with mlprogram).")
@click.option("--int4", is_flag=True, help="CoreML: also NAME.int4.mlpackage, int4 weights in blocks of 32 (iOS18).")
@click.option("--palettize", type=click.Choice(["4", "6", "8"]),
              help="CoreML: also NAME.palettizeN.mlpackage, weights as N-bit look-up tables (k-means).")
@click.option("--enumerate", "enumerations", multiple=True, metavar="NAME=VALUES",
              help="CoreML: fixed sizes instead of a range (faster on the Neural Engine), per dim (batch=1,4,8) or "
                   "per input (x=1x3x224x224,1x3x160x160); repeatable.")
@click.option("--workspace", metavar="SIZE", help="TensorRT: scratch memory for the builder, MiB or e.g. 2GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False),
              help="TensorRT: a timing cache file, read and updated by every build (faster rebuilds).")
@click.option("--opt-level", type=click.IntRange(0, 5),
              help="TensorRT: builder optimization level, 0-5 (default 3; higher builds longer).")
@click.option("--trt-compat", type=click.Choice(["none", "version", "hardware", "both"]),
              help="TensorRT: engines that run on later TensorRT versions and/or any Ampere+ GPU (default none).")
def convert(model, to, output_dir, inputs, sample, model_class, model_kwargs, trust_pickle, dynamic_batch, data, shapes,
            task, trust_remote_code, no_optimize, no_fuse, no_check, atol, rtol, opset, name, int8, calib, calib_samples,
            calib_method, int8_target, max_accuracy_drop, min_cosine, eval_data, eval_labels, resize, mean, std, layout,
            scale, precision, min_target, fp16, int4, palettize, enumerations, workspace, timing_cache, opt_level,
            trt_compat):
    """Convert MODEL to checked artifacts.

    MODEL is a .pt2 (torch.export), a TorchScript .pt, a state dict .pt/.pth (with --model-class), a .skops,
    a .pkl/.joblib (with --trust-pickle), an .onnx file, or a Hugging Face folder (config.json +
    model.safetensors; needs the [hf] extra): its tokenizer and labels go beside and into the artifact. Every artifact is run beside its source on the
    same inputs; a mismatch beyond tolerance fails the command (exit 1) and writes nothing. With --int8 the
    INT8 model is judged against FP32 on held-out data; layers that hurt are kept in FP32, and an INT8
    model that still fails is not written (exit 1).

    \b
      edgeml convert model.pt2 -o build/
      edgeml convert model.pth --model-class mypkg.nets:Net --input x:1x20 -o build/
      edgeml convert model.skops --sample train.csv -o build/
      edgeml convert model.pkl --trust-pickle --input X:1x30 -o build/
      edgeml convert model.pt2 --int8 --calib images/ --calib-samples 256 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
      edgeml convert model.pt2 --int8 --calib calib.npz --calib-method entropy --max-accuracy-drop 1
      edgeml convert model.onnx --int8                  (no calibration data: dynamic INT8)
      edgeml convert model.pt2 --fp16                   (also build/model.fp16.onnx, for GPUs and TensorRT)
      edgeml convert model.pt2 --to onnx,coreml --palettize 4 --shape batch=1..8
      edgeml convert model.pt2 --to coreml --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225   (an image input)
      edgeml convert model.pt2 --to tensorrt --fp16 --shape batch=1..8   (on the device; elsewhere: exit 3, the command)
      edgeml convert path/to/hf-folder --int8 --shape sequence=128
    """
    from .pipeline import convert as run_convert

    image = _image_options(to, int8, resize, mean, std, layout, scale)
    quantization = _int8_options(int8, calib, calib_samples, calib_method, int8_target, max_accuracy_drop, min_cosine,
                                 eval_data, eval_labels, image)
    from .files import size_of

    compression = _coreml_compression(to, int8, calib, int4, palettize)
    _err(f"edgeml convert {model} -> {to}")
    result = run_convert(model, to, output_dir, inputs=list(inputs) or None, dynamic_batch=dynamic_batch, sample=sample,
                         data=data, model_class=model_class, model_kwargs=model_kwargs, trust_pickle=trust_pickle,
                         optimize=not no_optimize, check=not no_check, atol=atol, rtol=rtol, opset=opset, name=name,
                         int8=quantization, progress=_say, task=task, trust_remote_code=trust_remote_code,
                         shapes=list(shapes) or None, fuse=not no_fuse,
                         target_options=_target_options(
                             coreml=dict(precision=precision, min_target=min_target, compress=compression,
                                         calib=calib if compression == "w8a8" else None,
                                         shapes=_enumerations(enumerations),
                                         image=_coreml_image(to, image, mean, std, scale)),
                             tensorrt=dict(workspace=workspace, timing_cache=timing_cache, opt_level=opt_level,
                                           compat=trt_compat)),
                         fp16=fp16)
    for artifact in result.artifacts:
        if artifact.kept:
            click.echo(f"kept {artifact.path} (listed in {result.manifest.name}, as it was)")
            continue
        status = "checked" if artifact.check or "quantization" in artifact.record else "UNVERIFIED"
        size = size_of(artifact.path) / 1024
        click.echo(f"wrote {artifact.path} ({artifact.precision}, {size:.1f} KiB, {status})")
        for companion in artifact.record.get("companions", ()):
            click.echo(f"wrote {artifact.path.parent / companion} (read by {artifact.path.name}'s encode())")
        if "quantization" in artifact.record:
            _render_quantization(artifact.record["quantization"])
        fp16_record = next((step for step in artifact.record.get("conversion", ()) if step.get("edge") == "onnx -> fp16 onnx"),
                           None)
        if fp16_record is not None:
            _render_fp16(fp16_record)
    click.echo(f"wrote {result.manifest}")


def _numbers(text: str | None, flag: str, separator: str = ",") -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace("x", separator).split(separator))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of numbers", param_hint=flag) from None


def _target_options(**targets: dict) -> dict:
    """Each target's flags that were given, as convert's target options (convert refuses those of a target
    --to does not name)."""
    given = {target: {k: v for k, v in flags.items() if v is not None} for target, flags in targets.items()}
    return {target: flags for target, flags in given.items() if flags}


def _targets(to: str) -> set[str]:
    """The target names --to gives, as the flags that depend on them read it."""
    return {t.strip().lower() for t in to.split(",")}


def _coreml_compression(to: str, int8: bool, calib, int4: bool, palettize) -> str | None:
    """The CoreML compression the flags ask for: --int4, --palettize N, else --int8 (W8A8 with --calib, weights
    only without) when --to names coreml."""
    asked = [c for c, wanted in (("int4", int4), (f"palettize{palettize}", palettize)) if wanted]
    if len(asked) > 1:
        raise InputError("--int4 and --palettize are two CoreML compressions; give one per run")
    targets = _targets(to)
    if asked:
        if int8 and "coreml" in targets and not targets & {"onnx", "ort", "tensorrt"}:
            raise InputError(f"--int8 and --{asked[0].rstrip('468')} are two CoreML compressions and --to builds no "
                             "ONNX INT8 artifact; give one of them")
        return asked[0]
    if int8 and "coreml" in targets:
        return "w8a8" if calib else "int8"
    return None


def _key_values(values, flag: str, example: str = "trt_fp16_enable=1") -> dict | None:
    """A repeatable KEY=VALUE flag as {KEY: VALUE}; None when not given."""
    found = {}
    for value in values:
        key, equals, given = value.partition("=")
        if not equals or not key.strip() or not given.strip():
            raise click.BadParameter(f"{value!r}: give KEY=VALUE, e.g. {example}", param_hint=flag)
        found[key.strip()] = given.strip()
    return found or None


def _enumerations(values) -> dict | None:
    """--enumerate NAME=VALUES, repeatable, as {NAME: VALUES} (CoreML's option reads VALUES)."""
    return _key_values(values, "--enumerate", "batch=1,4,8 or x=1x3x224x224,1x3x160x160")


def _image_options(to: str, int8: bool, resize, mean, std, layout, scale):
    """The image flags as the API's ImageOptions: how --int8's calibration images are normalized, and with --to
    coreml (--mean, --std, --scale) the preprocessing of the package's image input. Without either use they
    are a usage error."""
    from .datafiles import ImageOptions

    coreml = "coreml" in _targets(to)
    if not int8 and (resize or (mean or std or scale is not None) and not coreml):
        raise InputError("the image options (--resize, --mean, --std) apply with --int8 (how its calibration images "
                         "are normalized), and --mean, --std and --scale also with --to coreml (a package that takes "
                         "images); add --int8" + ("" if coreml else " or coreml to --to")
                         + (" (--resize sizes calibration images only: a CoreML image input keeps its size)"
                            if resize and coreml else ""))
    size = _numbers(resize, "--resize", "x")
    if size is not None and len(size) != 2:
        raise click.BadParameter(f"{resize!r}: give HEIGHTxWIDTH, e.g. 224x224", param_hint="--resize")
    return ImageOptions(resize=size, mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"), layout=layout,
                        **({} if scale is None else {"scale": scale}))


def _coreml_image(to: str, image, mean, std, scale):
    """The CoreML image option: ``image`` without the calibration-only resize when --to names coreml and
    --mean, --std or --scale is given (then the package's image input takes pixels), else None."""
    if "coreml" not in _targets(to) or not (mean or std or scale is not None):
        return None
    return dataclasses.replace(image, resize=None)


def _int8_options(int8, calib, calib_samples, calib_method, target, max_drop, min_cosine, eval_data, eval_labels,
                  image):
    """The INT8 flags as the API's Int8Options; calibration flags without --int8 are a usage error."""
    if not int8:
        if calib or eval_data or eval_labels or min_cosine is not None:
            raise InputError("--calib, --eval-data, --eval-labels and --min-cosine apply with --int8; add --int8")
        return False
    from .calibration.int8 import Int8Options

    return Int8Options(calib=calib, calib_samples=calib_samples, method=calib_method, target=target,
                       max_accuracy_drop=max_drop, eval_data=eval_data, eval_labels=eval_labels, image=image,
                       **({} if min_cosine is None else {"min_cosine": min_cosine}))


def _render_quantization(report: dict) -> None:
    """The quantization report, in a few lines for a terminal or a CI log."""
    recipe = report["recipe"]
    how = f"{report['method']} calibration" if report["mode"] == "static" else "activations quantized at run time"
    lines = [f"  INT8 {report['mode']} ({how}) for target {report['target']}: {recipe['activations']} activations, "
             f"{recipe['weights']} weights ({recipe['weight_bits']} bits): "
             f"{report['size_fp32_bytes'] / 1024:.1f} KiB -> {report['size_int8_bytes'] / 1024:.1f} KiB"]
    if "calibration_samples" in report:
        lines.append(f"  calibration: {report['calibration_samples']} samples in {report['calibration_seconds']:.2f} s, "
                     f"peak RSS {report['peak_rss_mb']:.0f} MB")
    lines.append(f"  accuracy: {report['accuracy']['summary']}; judged with {report['judged_with']}")
    if report["excluded_layers"]:
        lines.append(f"  kept in FP32: {', '.join(report['excluded_layers'])}")
    worst = report.get("lowest_sqnr_layers", [])[:5]
    if worst:
        lines.append("  lowest SQNR: " + ", ".join(f"{w['node']} {w['sqnr_db']:.1f} dB" for w in worst))
    latency = report["latency"]
    lines.append(f"  latency on this machine ({latency['measured_on']}, batch {latency['batch']}): FP32 p50 "
                 f"{latency['p50_fp32_ms']:.3f} ms, INT8 p50 {latency['p50_int8_ms']:.3f} ms ({latency['speedup']:.2f}x)")
    lines += [f"  note: {note}" for note in [*report["notes"], *filter(None, [latency.get("note")])]]
    click.echo("\n".join(lines))


def _render_fp16(record: dict) -> None:
    """The FP16 conversion in a line or two: weights, sizes, what stayed FP32 and why."""
    lines = [f"  FP16: {record['fp16_weight_share']:.0%} of the weights in FP16, {record['size_fp32_bytes'] / 1024:.1f} KiB "
             f"-> {record['size_fp16_bytes'] / 1024:.1f} KiB, {len(record['rounds'])} round(s) against FP32"]
    if record["kept_fp32"]:
        lines.append("  kept in FP32: " + "; ".join(f"{node} ({why})" for node, why in record["kept_fp32"].items()))
    click.echo("\n".join(lines))


def _int_list(ctx, param, value):
    if value is None:
        return [None]
    parts = [v.strip() for v in str(value).split(",") if v.strip()]
    if not all(p.isascii() and p.lstrip("-").isdigit() for p in parts):  # ASCII only: int() also reads '٢'
        raise click.BadParameter(f"{value!r}: give a number or a comma-separated list, e.g. 1,8,32")
    numbers = [int(p) for p in parts]
    if not numbers:
        raise click.BadParameter(f"{value!r}: give at least one number, e.g. 1 or 1,8,32")
    return numbers


def _fraction(ctx, param, value):
    """'10%' and '10' are 10%; a bare number up to 1 ('0.1') is a fraction, as in the Python API."""
    text = str(value).strip()
    try:
        number = float(text.rstrip("%"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a percentage, e.g. 10%") from None
    return number / 100 if text.endswith("%") or number > 1 else number


BENCH_SECTIONS = (
    ("Inputs (what each call is fed)", ("--batch", "--data", "--text", "--shape", "--seed")),
    ("Method (where and how the calls are timed)",
     ("--device", "--option", "--threads", "--clock", "--warmup", "--warmup-ms", "--runs", "--min-seconds",
      "--max-seconds")),
    ("Gate (exit 1 when over budget or regressed) and comparison",
     ("--budget-ms", "--percentile", "--baseline", "--max-regression", "--against")),
    ("Reports", ("--json", "--save-samples", "--junit", "--markdown", "--html")),
    ("Source models (when ARTIFACT is not an .onnx file)",
     ("--input", "--sample", "--model-class", "--model-kwargs", "--trust-pickle")),
)


@main.command(cls=_Sections, sections=BENCH_SECTIONS)
@click.argument("artifact", type=click.Path())
@click.option("--budget-ms", type=float, help="Latency budget; exit 1 when the gated percentile is over it.")
@click.option("--percentile", type=float, default=90, show_default=True,
              help="The percentile the gate judges (p90, MLPerf single-stream's, by default): the lowest of 5 blocks' "
                   "99.8% upper bounds on it, a 99% upper bound on the run's quietest stretch.")
@click.option("--clock", type=click.Choice(["own", "wall"]), default="own", show_default=True,
              help="own: each call's wall time less the time its thread was descheduled by other work; "
                   "wall: wall time as measured.")
@click.option("--batch", default="1", show_default=True, callback=_int_list, help="Batch size, or a list: 1,8,32.")
@click.option("--threads", default=None, callback=_int_list, help="Intra-op threads, or a list: 1,2 (default: the backend's).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda[:N], or tensorrt (ONNX Runtime provider).")
@click.option("--option", "runtime_options", multiple=True, metavar="KEY=VALUE",
              help="A runtime option of the artifact's backend, repeatable: onnxruntime's GPU provider options "
                   "(trt_fp16_enable=1, trt_engine_cache_path=DIR...), CoreML's compute_units=CPU_AND_NE.")
@click.option("--data", help="Real inputs, cycled, instead of random ones (any --calib kind of source).")
@click.option("--text", type=click.Path(dir_okay=False),
              help="A file of sentences, one a line, tokenized by the artifact's tokenizer: real inputs for text models.")
@click.option("--shape", "shapes", multiple=True, metavar="DIM=SIZE",
              help="Size of a symbolic dim other than the batch, e.g. sequence=128 (repeatable); also for .onnx files.")
@click.option("--warmup", "warmup_runs", type=int, default=10, show_default=True, help="Warm-up runs, at least.")
@click.option("--warmup-ms", type=float, default=200, show_default=True, help="Warm-up time, at least.")
@click.option("--runs", "min_runs", type=int, default=100, show_default=True, help="Timed runs, at least.")
@click.option("--min-seconds", type=float, default=3.0, show_default=True, help="Measuring time, at least.")
@click.option("--max-seconds", type=float, default=60.0, show_default=True,
              help="The cap: a run extended for the percentile's sample count stops here.")
@click.option("--baseline", type=click.Path(dir_okay=False),
              help="A JSON from an earlier --json --save-samples run of the same artifact: gate on regressions.")
@click.option("--max-regression", default="10%", show_default=True, callback=_fraction,
              help="With --baseline: fail when slower by more than this AND significantly (Mann-Whitney, p<0.01).")
@click.option("--against", type=click.Path(dir_okay=False),
              help="Another artifact, run interleaved in the same process; reports the p50 ratio with its 95% CI.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write all results as JSON.")
@click.option("--save-samples", is_flag=True, help="With --json: include the raw samples (needed for --baseline later).")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Write a JUnit XML report (one testcase per run).")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False),
              help="Write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY whenever that is set).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Write one self-contained HTML page with the table, a histogram and a CDF (works offline).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@_source_options
def bench(artifact, budget_ms, percentile, clock, batch, threads, device, runtime_options, data, text, shapes, warmup_runs,
          warmup_ms, min_runs, min_seconds, max_seconds, baseline, max_regression, against, json_path, save_samples,
          junit_path, markdown_path, html_path, seed, inputs, sample, model_class, model_kwargs, trust_pickle):
    """Measure ARTIFACT's latency per call and gate on it: load time, first inference, percentiles, throughput.

    The gate judges --percentile (p90 by default) of each call's own time (wall time less the time its
    thread was descheduled): the lowest of 5 consecutive blocks' 99.8% upper bounds, a 99% upper bound on
    the quietest stretch of the run, which a neighbour's burst of load cannot move and a slower model does.
    The run lasts at least --runs and --min-seconds, longer until no block's bound is its slowest call
    (p90: 500 calls, p99: 5175), never past --max-seconds. On a shared CI
    runner pin --threads 1 (worker threads descheduled while the caller waits count as model time).
    ARTIFACT is an .onnx file, or a source model (.pt2, TorchScript, state dict, .skops, trusted pickle)
    to measure the baseline it runs at today; the source options say how to load one.

    \b
      edgeml bench build/model.int8.onnx --budget-ms 100 --junit bench.xml --json bench.json
      edgeml bench build/model.onnx --batch 1,8,32 --threads 1,2
      edgeml bench build/model.onnx --json main.json --save-samples       (on main: the baseline)
      edgeml bench build/model.onnx --baseline main.json --max-regression 10%
      edgeml bench build/model.int8.onnx --against build/model.onnx
      edgeml bench build/model.onnx --html report.html
      edgeml bench build/minilm.onnx --shape sequence=128 --text sentences.txt
    """
    from .latency.reports import check_writable, overall, write_reports
    from .latency.runner import Method, bench_sweep

    _err(f"edgeml bench {artifact}")
    check_writable(json_path, junit_path, markdown_path, html_path)
    method = Method(warmup_ms=warmup_ms, warmup_runs=warmup_runs, min_runs=min_runs, min_seconds=min_seconds,
                    max_seconds=max_seconds, clock=clock)
    results = bench_sweep(artifact, batches=batch, threads=threads, budget_ms=budget_ms, percentile=percentile,
                          device=device, data=data, text=text, shapes=list(shapes) or None, seed=seed, method=method,
                          baseline=baseline,
                          max_regression=max_regression, against=against, progress=_say,
                          source=dict(inputs=list(inputs) or None, sample=sample, model_class=model_class,
                                      model_kwargs=model_kwargs, trust_pickle=trust_pickle),
                          runtime_options=_key_values(runtime_options, "--option"))
    for path in write_reports(results, json_path=json_path, junit_path=junit_path, markdown_path=markdown_path,
                              html_path=html_path, samples=save_samples):
        _err(f"wrote {path}")
    code = EXIT_GATE_FAILED if overall(results) is False else 0
    click.get_current_context().meta[EXIT_AFTER_OUTPUT] = code
    _render_bench(results)
    sys.exit(code)


def _render_bench(results) -> None:
    from rich.markup import escape

    from .latency.stats import GATE_RULE
    from rich.table import Table

    first = results[0]
    env = first.environment
    table = Table(title=escape(f"{first.artifact} [{first.backend}/{first.device}] on {env['cpu']} "
                               f"({env['cores']} cores, {', '.join(env['isa']) or 'no SIMD extensions found'})"),
                  title_justify="left", caption="times in ms: each call's own time (wall less time descheduled; --clock wall: wall time); "
                          f"gated = {GATE_RULE}",
                  caption_justify="left")
    columns = ("batch", "threads", "runs", "load", "first", "p50", "p90", "p95", "p99", "p99.9", "mean", "std",
               "spread", "desched.", "throughput", "gated", "verdict")
    for column in columns:
        table.add_column(column, justify="left" if column == "verdict" else "right")
    for r in results:
        s = r.stats
        mark = {True: "[green]PASS[/]", False: "[red bold]FAIL[/]", None: "INFO"}[r.passed]
        table.add_row(str(r.batch), str(r.threads or "default"), str(s["count"]), f"{r.load_ms:.1f}",
                      f"{r.first_ms:.3f}", *(f"{s[k]:.3f}" for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99.9_ms",
                                                                    "mean_ms", "std_ms")),
                      f"{s['spread']:.1%}", f"{r.descheduled['share']:.0%}", f"{s['throughput_per_s']:.0f}/s", f"{r.gated_ms:.3f}", mark)
    _print_table(table)
    for r in results:
        label = {True: "PASS", False: "FAIL", None: "INFO"}[r.passed]
        click.echo(f"{label}: {r.name}: {r.verdict()}")
        for note in r.notes:
            click.echo(f"  warning: {note}")


#: What every backend's summary holds (``inspection.summary``); inspect prints the rest as it comes.
_COMMON_SUMMARY = {"file", "size_bytes", "inputs", "outputs", "ir_version", "opsets", "producer", "parameters", "nodes",
                   "ops", "quantized", "precision", "metadata"}


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect(artifact, as_json):
    """Show an artifact's inputs, outputs, opsets, size, parameters, ops and precision (any format --to builds)."""
    from .backends import inspect as inspect_model

    info = inspect_model(artifact)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from .spec import TensorSpec

    click.echo(f"{info['file']}  ({info['size_bytes'] / 1024:.1f} KiB, {info['producer'] or 'unknown producer'})")
    for label in ("inputs", "outputs"):
        click.echo(f"{label}:")
        for spec in info[label]:
            click.echo(f"  {TensorSpec.from_dict(spec)}")
    opsets = ", ".join(f"{d} {v}" for d, v in info["opsets"].items())
    click.echo(f"opsets: {opsets} (IR {info['ir_version']})")
    click.echo(f"parameters: {info['parameters']:,}   nodes: {info['nodes']}")
    click.echo(f"precision: {info['precision']}" + ("  (quantized)" if info["quantized"] else ""))
    click.echo("ops: " + ", ".join(f"{op} x{n}" for op, n in info["ops"].items()))
    for key, value in info.items():  # what only this backend says (CoreML's weights, an engine's build record)
        if key not in _COMMON_SUMMARY and value not in (None, {}, []):
            shown = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
            click.echo(f"{key.replace('_', ' ')}: {shown}")


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
def verify(folder):
    """Check an output folder against its edgeml.json: every listed artifact present with its size and
    sha256, loadable, no unlisted ONNX file, no temporary file left by a killed convert. Exit 1 when anything
    is wrong, one line per problem.

    \b
      edgeml verify build/
    """
    from .verification import verify as verify_folder

    result = verify_folder(folder)
    click.get_current_context().meta[EXIT_AFTER_OUTPUT] = 0 if result.ok else EXIT_GATE_FAILED
    for problem in result.problems:
        click.echo(f"problem: {problem}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(("ok: " if result.ok else "FAILED: ") + result.summary())
    if not result.ok:
        sys.exit(EXIT_GATE_FAILED)


@main.command()
@click.option("-o", "--output", "output_dir", default="edgeml-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--budget-ms", type=float, default=100, show_default=True)
def demo(output_dir, budget_ms):
    """Train a PyTorch MLP and a RandomForest on scikit-learn's digits, convert, check and bench them.

    Needs the torch and sklearn extras: pip install -c constraints.txt 'edgeml[torch,sklearn]'
    """
    from rich.table import Table

    from .demo import run_demo

    _err(f"edgeml demo -> {output_dir}")
    rows = run_demo(output_dir, budget_ms, progress=_say)
    table = Table(title=f"edgeml demo: digits, ONNX Runtime CPU, budget {budget_ms:g} ms", title_justify="left")
    for column in ("model", "artifact", "size", "check", "accuracy source -> onnx", "p50 ms", "p99 ms", "budget"):
        table.add_column(column, justify="right" if column in ("size", "p50 ms", "p99 ms") else "left")
    for r in rows:
        table.add_row(r["model"], r["artifact"], f"{r['size_kb']:.0f} KiB", "passed" if r["check_passed"] else "FAILED",
                      f"{r['source_accuracy']:.2%} -> {r['onnx_accuracy']:.2%}", f"{r['p50_ms']:.3f}",
                      f"{r['p99_ms']:.3f}", "within" if r["within_budget"] else "OVER")
    code = 0 if all(r["check_passed"] and r["within_budget"] for r in rows) else EXIT_GATE_FAILED
    click.get_current_context().meta[EXIT_AFTER_OUTPUT] = code
    _print_table(table)
    sys.exit(code)


if __name__ == "__main__":
    main()
