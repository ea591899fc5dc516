"""PyTorch -> CoreML (an mlprogram ``.mlpackage``) with coremltools, from the source model itself: coremltools
has no ONNX frontend since 6.0. The program is ``torch.export``-ed with the same example call and bounded
dims as the ONNX export, so every flexible dim becomes a finite ``RangeDim`` (or, with the ``shapes``
option, the ``EnumeratedShapes`` given).

Compression (the ``compress`` option) is coremltools.optimize's: weights int8/int4/palettized on the
converted program, or W8A8 through ``coremltools.optimize.torch`` on the torch model (observers calibrated on
the user's inputs), converted from its TorchScript trace (torch.export cannot carry torch's quantize ops).
The result is checked here: its weights must really be stored compressed, and its ops and spec version must
be ones its deployment target has.

With the ``image`` option (``datafiles.ImageOptions``: the pixel scale, mean and std the model was trained
with) the image input becomes an ``ImageType``, which an app feeds a ``CVPixelBuffer``: Core ML applies one
scale and a bias per channel to the pixels, and a std that differs per channel is divided inside the program
(``image_inputs``)."""

from __future__ import annotations

import copy
import itertools
import json
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import CheckFailed, EdgeMLError, ExportError, InputError, first_line, require
from ..files import size_of
from ..quiet import quiet
from ..runtimes.coreml import (IMAGE_INPUTS, compressed_weights, compression_of, coremltools, package_metadata,
                               program_contents, spec_version)
from ..sources.base import SourceModel
from ..sources.torch_source import program_input_specs
from .torch_onnx import fixes_a_symbolic_dim, dynamic_shapes, example_call

#: coremltools compresses only weights with more elements than this (its default): smaller ones stay float.
WEIGHT_THRESHOLD = 2048
#: int4's block: 32 input channels share a scale.
INT4_BLOCK = 32


def torch_to_coreml(source: SourceModel, out: Path, options: dict) -> dict:
    """Write ``source`` as an mlprogram package at ``out`` with ``options`` (``backends.coreml.check_options``'s);
    returns the record of how. A weight-only compression compresses the float package of the same options
    (``uncompressed``) when there is one: the same program, converted once."""
    if options["compress"] not in (None, "w8a8") and options.get("uncompressed"):
        return _compressed_copy(coremltools(), options["uncompressed"], options["compress"], out, options["min_target"])
    images = image_inputs(source.inputs, options["image"]) if options.get("image") else {}
    torch = require("torch", "torch")
    ct = coremltools()
    args, _, output_names, symbols, bounds = example_call(torch, source)
    shapes = enumerations(source, symbols, bounds, options)
    for name, sizes in _enumerated_sizes(source.inputs, symbols, shapes).items():
        bounds[name] = (min(sizes), max(sizes))  # the export proves the graph for every enumerated size
    unbounded = [name for dims in symbols for name in dims.values() if bounds.get(name) is None]
    if unbounded:
        raise InputError(f"CoreML needs a finite range for the dim {unbounded[0]!r} (an unbounded one makes a slow "
                         f"package); give one: --shape {unbounded[0]}=1..32, or --input with a range such as x:1..32x...")
    model = source.model
    if isinstance(model, torch.export.ExportedProgram):
        if fixes_a_symbolic_dim(model, source.inputs):
            raise ExportError(f"{source.path or 'the ExportedProgram'} was exported with fixed shapes "
                              f"({', '.join(map(str, program_input_specs(model)))}), so its dims cannot be flexible; "
                              "export it with dynamic_shapes=... or drop --dynamic-batch")
        model = model.module()  # exported again below, so that the package gets exactly these bounds
    compress = options["compress"]
    convert = dict(convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, options["min_target"]),
                   compute_precision=getattr(ct.precision, options["precision"].replace("fp", "FLOAT")),
                   compute_units=getattr(ct.ComputeUnit, options["compute_units"]),
                   outputs=[ct.TensorType(name=name, dtype=np.float32) for name in output_names])
    record, program = {}, None
    try:
        if compress == "w8a8":
            calibrated, record["compression"] = _calibrated(torch, model, source, args, options["calib"])
            model = calibrated
        divided = {i: images[s.name]["std"] for i, s in enumerate(source.inputs)
                   if images.get(s.name, {}).get("std_in_program")}
        if divided:  # calibrated (w8a8) on the source's inputs, before its image inputs stop being divided by std
            model = _dividing(torch, model, divided)
        with quiet():
            if compress == "w8a8":  # TorchScript: torch.export has no form for torch's quantize ops
                traced, named = torch.jit.trace(model, args), set()
                inputs = [_input_type(ct, s, shapes.get(s.name) or _ranged(ct, arg, dims, bounds, named), images)
                          for s, arg, dims in zip(source.inputs, args, symbols)]
                package = ct.convert(traced, inputs=inputs, **convert)
            else:
                dynamic = dynamic_shapes(torch, symbols, bounds)
                program = torch.export.export(model, args, dynamic_shapes=(dynamic,) if divided and dynamic else dynamic)
                # named as the source's specs (torch.export names them after forward's parameters)
                inputs = [_input_type(ct, s, shapes.get(s.name), images) for s in source.inputs]
                program = _decomposed(torch, program)
                package = ct.convert(program, inputs=inputs, **convert)
    except EdgeMLError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.export's and coremltools' errors name the op that fails
        raise ExportError(f"coremltools {ct.__version__} cannot convert {source.path or type(source.model).__name__}"
                          f"{' for w8a8' if compress == 'w8a8' else ''} ({type(exc).__name__}: {first_line(exc)}"
                          f"{_layer_of(program, exc) if compress != 'w8a8' else ''}); "
                          "replace that op, or ship the ONNX target") from exc
    package.user_defined_metadata.update(package_metadata(source, **({IMAGE_INPUTS: json.dumps(images)} if images else {})))
    made = {"converter": "coremltools", "version": ct.__version__, "torch": torch.__version__, "format": "mlprogram",
            "precision": options["precision"], "minimum_deployment_target": options["min_target"],
            "compute_units": options["compute_units"], "outputs": output_names,
            **({"enumerated_shapes": {k: [list(s.shape) for s in v.shapes] for k, v in shapes.items()}} if shapes else {}),
            **({"image_inputs": images} if images else {})}
    if compress not in (None, "w8a8"):  # weights only, without this run's float package: saved aside first
        with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
            package.save(str(Path(scratch) / out.name))
            return _compressed_copy(ct, {"path": Path(scratch) / out.name, "record": made}, compress, out,
                                    options["min_target"])
    package.save(str(out))
    stored = _verified(ct, out, compress, options["min_target"])
    if compress is not None:
        record["compression"].update(method=compress, **stored)
    return {**made, **record}


def _decomposed(torch, program):
    """``program`` as an inference program (what coremltools converts), with each op coremltools has no
    converter for replaced by its core ATen decomposition (a Hugging Face BERT calls ``new_ones`` and
    ``__and__``), as long as there is one: every other op is converted as written, so that coremltools' fused
    forms (layer norm, attention) stay."""
    from coremltools.converters.mil.frontend.torch import is_torch_fx_node_supported

    def lacks(node) -> bool:
        try:
            return not is_torch_fx_node_supported(node)
        except AssertionError:  # a name ending in "_" (``__and__``): it has no converter for those either
            return True

    table = torch.export.default_decompositions()
    for round_ in range(3):  # the first also makes the inference program; a decomposition may bring another op
        lacking = {node.target for node in program.graph.nodes if node.op == "call_function"
                   and isinstance(node.target, torch._ops.OpOverload) and node.target in table and lacks(node)}
        if round_ and not lacking:
            break
        program = program.run_decompositions({op: table[op] for op in lacking})
    return program


def _layer_of(program, exc: Exception) -> str:
    """Where in the model the op coremltools has no converter for is: its layer (module path and class) and
    the line of the user's code that calls it, from the exported program's node ("" when not found)."""
    found = re.search(r"Unsupported fx node (\S+?),", str(exc))
    node = next((n for n in program.graph.nodes if n.name == found.group(1)), None) if found and program else None
    if node is None:
        return ""
    path, kind = list((node.meta.get("nn_module_stack") or {"": ("", "the model")}).values())[-1]
    lines = (node.meta.get("stack_trace") or "").strip().splitlines()
    called = next((line.strip() for line in reversed(lines) if line.strip().startswith("File ")), "")
    where = f", {called.removeprefix('File ').replace(', in ', ' in ')}" if called else ""
    return f"; in layer {path or '(the model itself)'} ({kind.rsplit('.', 1)[-1]}){where}"


def _compressed_copy(ct, uncompressed: dict, method: str, out: Path, min_target: str) -> dict:
    """The float package at ``uncompressed["path"]`` (made as ``uncompressed["record"]`` says) with its weights
    compressed by ``method``, saved at ``out``, checked; returns its record: the float one's, and how."""
    package = ct.models.MLModel(str(uncompressed["path"]), skip_model_load=True)
    compression = _compress(ct, package, method, out)
    compression.update(method=method, float_package_bytes=size_of(uncompressed["path"]), **_verified(ct, out, method, min_target))
    return {**{k: v for k, v in uncompressed["record"].items() if k != "edge"}, "compression": compression}


def image_inputs(specs, image) -> dict:
    """The image input of ``specs`` and how Core ML is to preprocess it for a model trained on ``image``'s
    normalization ((pixel / scale - mean_c) / std_c): {name: {color_layout, scale, mean, std, coreml_scale,
    coreml_bias, std_in_program}}. Core ML computes ``coreml_scale * pixel + coreml_bias_c``, one scale for
    every channel: a std the same in every channel goes into that scale and the bias; one that differs per
    channel is divided inside the program (``std_in_program``). An InputError for a model Core ML cannot
    give images: the image input is the one 4-D float input, (1, 3 or 1, H, W)."""
    candidates = [s for s in specs if len(s.shape) == 4 and s.np_dtype.kind == "f"]
    fix = "drop --mean/--std/--scale (image options) to keep a tensor input"
    if len(candidates) != 1:
        found = ", ".join(map(str, candidates or specs))
        raise InputError(f"Core ML image inputs need one 4-D float input (1, C, H, W); this model takes {found}: {fix}")
    spec = candidates[0]
    channels = spec.shape[1]
    if channels not in (1, 3):
        raise InputError(f"input {spec} has {channels} channels on axis 1, but Core ML images are RGB (3) or "
                         f"grayscale (1), channels first: {fix}, or export the model channels first (NCHW)")
    if spec.shape[0] != 1:
        example = "x".join(map(str, (1, *spec.shape[1:])))
        batch = f"a flexible batch ({spec.shape[0]})" if isinstance(spec.shape[0], str) else f"a batch of {spec.shape[0]}"
        raise InputError(f"input {spec} has {batch}, but a Core ML image input takes one image a call; give --input "
                         f"{spec.name}:{example} (a .pt2: export it with a batch of 1), or {fix}")
    stats = {}
    for stat, values, default in (("mean", image.mean, 0.0), ("std", image.std, 1.0)):
        values = list(values or [default])
        if len(values) not in (1, channels):
            raise InputError(f"--{stat} has {len(values)} values, but input {spec} has {channels} channel(s); give "
                             "one per channel (or one for all)")
        stats[stat] = values * channels if len(values) == 1 else values
    mean, std = stats["mean"], stats["std"]
    per_channel = len(set(std)) > 1
    divisor = 1.0 if per_channel else std[0]
    return {spec.name: {"color_layout": "RGB" if channels == 3 else "GRAYSCALE", "scale": float(image.scale),
                        "mean": mean, "std": std, "coreml_scale": 1.0 / (image.scale * divisor),
                        "coreml_bias": [-m / divisor for m in mean], "std_in_program": per_channel}}


def _input_type(ct, spec, shape, images: dict):
    """The ``ct.ImageType`` of an image input (``image_inputs``' record), else the ``ct.TensorType`` of ``spec``;
    ``shape``: None (the program's), a shape of ``RangeDim``s, or ``ct.EnumeratedShapes``."""
    image = images.get(spec.name)
    if image is None:
        return ct.TensorType(name=spec.name, shape=shape, dtype=_coreml_dtype(spec.np_dtype))
    rgb = image["color_layout"] == "RGB"
    return ct.ImageType(name=spec.name, shape=shape, scale=image["coreml_scale"],
                        bias=image["coreml_bias"] if rgb else image["coreml_bias"][0],
                        color_layout=ct.colorlayout.RGB if rgb else ct.colorlayout.GRAYSCALE)


def _dividing(torch, model, divided: dict):
    """``model`` behind a module that first divides its inputs at the positions in ``divided`` by their
    per-channel std ({position: [std per channel]}): what Core ML's one image scale cannot do."""

    class Dividing(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            for position, std in divided.items():
                self.register_buffer(f"std{position}", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

        def forward(self, *args):
            return self.model(*(a / getattr(self, f"std{i}") if i in divided else a for i, a in enumerate(args)))

    wrapper = Dividing()
    wrapper.training = False  # not .eval(): it recurses, and an ExportedProgram's module refuses train()
    return wrapper


def enumerations(source: SourceModel, symbols: list[dict], bounds: dict, options: dict) -> dict:
    """``ct.EnumeratedShapes`` per input from the ``shapes`` option: {dim name: sizes} (every input with that dim
    takes each size; an input with several such dims takes every combination) or {input name: shapes}. Each
    shape keeps the input's fixed dims; an enumerated dim with a range must span it (smallest and largest
    size its ends), since the package's shapes replace the range."""
    given = options.get("shapes")
    if not given:
        return {}
    ct = coremltools()
    names = {s.name for s in source.inputs}
    dims = {name for s in symbols for name in s.values()}
    for key in given:
        if key not in names | dims:
            raise InputError(f"enumerated shapes name {key!r}, which is neither an input ({', '.join(sorted(names))}) "
                             f"nor a flexible dim ({', '.join(sorted(dims)) or 'none: every dim is fixed'})")
    shapes = {}
    for spec, axes in zip(source.inputs, symbols):
        if spec.name in given:
            listed = [tuple(_sizes(s, f"shape of {spec.name}", "x")) for s in _items(given[spec.name], ",")]
        elif any(dim in given for dim in axes.values()):
            left = [d for d in axes.values() if d not in given]
            if left:
                raise InputError(f"input {spec} has enumerated and flexible dims: enumerate {left[0]!r} too (Core ML "
                                 "lists an input's shapes whole)")
            choices = [_sizes(given[d], f"sizes of {d}", ",") if isinstance(d, str) else [d] for d in spec.shape]
            listed = [tuple(c) for c in itertools.product(*choices)]
        else:
            continue
        for shape in listed:
            if len(shape) != len(spec.shape) or any(isinstance(w, int) and w != g for g, w in zip(shape, spec.shape)):
                raise InputError(f"enumerated shape {'x'.join(map(str, shape))} does not fit input {spec}: same rank, "
                                 "same fixed dims")
        shapes[spec.name] = listed
    for dim, sizes in _enumerated_sizes(source.inputs, symbols, shapes).items():
        if isinstance(bounds.get(dim), tuple) and bounds[dim] != (min(sizes), max(sizes)):
            low, high = bounds[dim]
            raise InputError(f"the enumerated sizes of {dim!r} ({', '.join(map(str, sorted(sizes)))}) replace its range "
                             f"{low}..{high}: make the range {min(sizes)}..{max(sizes)}, or give the dim without one")
    if len(shapes) > 1 and spec_version(options["min_target"]) < spec_version("iOS18"):
        raise InputError(f"inputs {', '.join(shapes)} all have enumerated shapes: before iOS18 Core ML takes them on "
                         "one input only; give --min-target iOS18 (or enumerate one input)")
    if len({len(v) for v in shapes.values()}) > 1:
        raise InputError("inputs with enumerated shapes must each list as many shapes (Core ML pairs them by "
                         f"position); they list {', '.join(f'{k}: {len(v)}' for k, v in shapes.items())}")
    return {name: ct.EnumeratedShapes(shapes=listed, default=listed[0]) for name, listed in shapes.items()}


def _items(value, separator: str) -> list:
    return [v.strip() for v in value.split(separator) if v.strip()] if isinstance(value, str) else list(value)


def _sizes(value, what: str, separator: str) -> list[int]:
    """Sizes from ``"1,4,8"``/``"1x3x224x224"`` or a list of ints, each a whole number >= 1."""
    items = _items(value, separator)
    if not items or not all(isinstance(v, (int, np.integer, str)) and str(v).isdigit() and int(v) >= 1 for v in items):
        raise InputError(f"enumerated {what}: {value!r} is not a list of whole numbers >= 1 (e.g. 1,4,8 or "
                         "1x3x224x224,1x3x160x160)")
    return [int(v) for v in items]


def _enumerated_sizes(specs, symbols: list[dict], shapes: dict) -> dict[str, set[int]]:
    """The sizes each symbolic dim takes in ``shapes`` ({input name: shapes, or ``ct.EnumeratedShapes``})."""
    sizes: dict[str, set[int]] = {}
    for spec, axes in zip(specs, symbols):
        listed = shapes.get(spec.name)
        if listed is None:
            continue
        listed = [s.shape for s in listed.shapes] if hasattr(listed, "shapes") else listed
        for axis, dim in axes.items():
            sizes.setdefault(dim, set()).update(int(shape[axis]) for shape in listed)
    return sizes


def _ranged(ct, example, axes: dict, bounds: dict, named: set) -> tuple:
    """An input's shape for a TorchScript conversion: its fixed sizes, and a ``RangeDim`` per symbolic dim,
    named after it the first time only (``named``: the names given so far): coremltools refuses a symbol given
    twice (a square image's height and width, a batch two inputs share), so a dim met again gets its own."""
    shape = []
    for axis, size in enumerate(example.shape):
        if axis not in axes:
            shape.append(size)
            continue
        dim = axes[axis]
        shape.append(ct.RangeDim(lower_bound=bounds[dim][0], upper_bound=bounds[dim][1], default=size,
                                 symbol=None if dim in named else dim))
        named.add(dim)
    return tuple(shape)


def _coreml_dtype(dtype: np.dtype):
    """Core ML's input types: int32 for integers (token ids), float32 for floats (not float16, which fp16
    compute gives a named input left untyped); a bool (a mask) as the converter takes it (float32)."""
    return np.int32 if dtype.kind in "iu" else np.float32


def _calibrated(torch, model, source: SourceModel, args: tuple, calib) -> tuple:
    """``model`` with int8 weights and int8 activations whose scales come from running ``calib`` through
    it (``coremltools.optimize.torch``'s LinearQuantizer: prepare, observe, finalize); and the record."""
    from coremltools.optimize.torch.quantization import (LinearQuantizer, LinearQuantizerConfig,
                                                        ModuleLinearQuantizerConfig)

    config = {"quantization_scheme": "symmetric", "weight_dtype": "qint8", "activation_dtype": "quint8",
              "weight_per_channel": True, "activation_observer": "min_max", "weight_observer": "min_max"}
    start = time.perf_counter()
    model = copy.deepcopy(model).eval()  # the source model stays as it was
    # prepare() puts the model in training mode before FX-tracing it, which bakes training-only branches (a
    # drop-connect's torch.rand) into the graph: calibration observes the model as it infers, in eval mode
    model.train = lambda mode=True: model
    with quiet():
        quantizer = LinearQuantizer(model, LinearQuantizerConfig(global_config=ModuleLinearQuantizerConfig(
            milestones=None, **config)))
        prepared = quantizer.prepare(example_inputs=args, inplace=True)
    # observed in float (as onnxruntime's min-max calibration does): each batch sees the float activations,
    # not ones quantized with the ranges of the batches before
    prepared.eval()  # batch norm with its running statistics (observers observe in eval mode too)
    prepared.apply(torch.ao.quantization.disable_fake_quant)
    batches = []
    with torch.no_grad(), quiet():
        for feeds in [calib] if isinstance(calib, Mapping) else calib:
            missing = [s.name for s in source.inputs if s.name not in feeds]
            if missing:
                raise InputError(f"calibration sample {len(batches) + 1} has no array for input {missing[0]!r}; give "
                                 "one array per input name")
            batches.append([torch.from_numpy(np.asarray(feeds[s.name], dtype=s.np_dtype)) for s in source.inputs])
            prepared(*batches[-1])
    if not batches:
        raise InputError("the calibration data holds no samples; give some (a few hundred real inputs is usual)")
    prepared.apply(torch.ao.quantization.enable_fake_quant)
    with quiet():
        finalized = quantizer.finalize(inplace=False)
    record = {"config": {**config, "how": "coremltools.optimize.torch LinearQuantizer, observed in eval mode"},
              "calibration_batches": len(batches), "calibration_rows": sum(len(b[0]) for b in batches),
              "calibration_seconds": round(time.perf_counter() - start, 3)}
    record["simulated"] = _simulated_gate(torch, model, finalized, batches, source)
    return finalized, record


def _simulated_gate(torch, model, quantized, batches: list, source: SourceModel) -> dict:
    """W8A8 judged before it is shipped, since Linux cannot run the package: ``quantized`` (the model with the
    package's int8 weights and activation scales, simulated by torch's fake quantization) against the float
    ``model`` on the calibration samples, by the INT8 gate's rule (``calibration.int8.Int8Options``' defaults):
    top-1 agreement for a classifier, else each sample's lowest output cosine. Failing is CheckFailed."""
    from ..calibration.int8 import Int8Options
    from ..runtimes.pytorch import flatten_outputs
    from ..validate import row_cosines

    gate = Int8Options()
    with torch.no_grad(), quiet():
        pairs = [(flatten_outputs(model(*args)), flatten_outputs(quantized(*args))) for args in batches]
    outputs = [(np.concatenate([p[0][i].numpy() for p in pairs]), np.concatenate([p[1][i].numpy() for p in pairs]))
               for i in range(len(pairs[0][0]))]
    cosine = float(min(row_cosines(ref, got).min() for ref, got in outputs))
    scores = outputs[0] if outputs[0][0].ndim == 2 and outputs[0][0].shape[1] > 1 else None
    result = {"against": "the float model, in torch", "samples": len(outputs[0][0]), "min_cosine": round(cosine, 6)}
    if source.meta is not None and source.meta.is_classifier and scores is not None:
        agreement = float((scores[0].argmax(1) == scores[1].argmax(1)).mean())
        result.update(judged_on="top-1 agreement", top1_agreement=round(agreement, 6),
                      passed=100 * (1 - agreement) <= gate.max_accuracy_drop)
        verdict = f"agrees with the float model on {agreement:.1%} of top-1 labels"
        needed = f"at least {100 - gate.max_accuracy_drop:g}%"
    else:
        result.update(judged_on="cosine", passed=cosine >= gate.min_cosine)
        verdict, needed = f"has a lowest sample cosine of {cosine:.4f} to the float model", f"{gate.min_cosine:g} needed"
    if not result["passed"]:
        raise CheckFailed(f"w8a8: the quantized model (simulated in torch with the package's scales) {verdict} on "
                          f"{result['samples']} calibration samples ({needed}); nothing written: compress with int8 "
                          "(weights only) instead, or calibrate on more representative data")
    return result


def _compress(ct, package, method: str, out: Path) -> dict:
    """Save ``package`` compressed by ``method`` at ``out``, with its metadata; returns the config and time."""
    import coremltools.optimize.coreml as cto

    if method.startswith("palettize"):
        config = {"mode": "kmeans", "nbits": int(method.removeprefix("palettize")), "granularity": "per_tensor"}
        compressor, op_config = cto.palettize_weights, cto.OpPalettizerConfig
    else:
        config = {"mode": "linear_symmetric", "dtype": method, "granularity": "per_channel"}
        if method == "int4":
            config.update(granularity="per_block", block_size=INT4_BLOCK)
        compressor, op_config = cto.linear_quantize_weights, cto.OpLinearQuantizerConfig
    config["weight_threshold"] = WEIGHT_THRESHOLD
    start = time.perf_counter()
    with quiet():
        compressed = compressor(package, config=cto.OptimizationConfig(global_config=op_config(**config)))
    seconds = time.perf_counter() - start
    compressed.user_defined_metadata.update(dict(package.user_defined_metadata))
    compressed.save(str(out))
    return {"config": config, "seconds": round(seconds, 3)}


def _verified(ct, out: Path, method: str | None, min_target: str) -> dict:
    """How the package at ``out`` stores its weights, checked: the compression asked for (``method``) must show
    in them (coremltools skips, without failing, the weights it cannot or need not compress), and the program
    must need no newer spec version and no op newer than ``min_target``. A CheckFailed says what is wrong."""
    spec = ct.utils.load_spec(str(out))
    ops, weights = program_contents(spec)
    problems = []
    found = compression_of(ops, weights)
    if method == "w8a8" and found != method:
        problems.append(f"w8a8 quantized nothing (its weights are {_listing(weights)}): coremltools.optimize.torch "
                        "quantizes nn.Conv/nn.Linear modules, which the model (a .pt2's program has none) does not "
                        "show; give the nn.Module (a state dict with --model-class)")
    elif method is not None and found != method:
        floats = sum(n for kind, n in weights.items() if kind.startswith("float"))
        problems.append(f"{method} compressed nothing (its weights are {_listing(weights)}): coremltools compresses "
                        f"only weights over {WEIGHT_THRESHOLD} elements" + (f" in blocks of {INT4_BLOCK} input channels"
                                                                           if method == "int4" else "")
                        + ("; this model's are too small to gain from it: ship it uncompressed" if floats else ""))
    if spec.specificationVersion > spec_version(min_target):
        problems.append(f"its spec version {spec.specificationVersion} is newer than {min_target} reads "
                        f"({spec_version(min_target)})")
    unsupported = _unsupported_ops(ct, ops, min_target)
    if unsupported:
        problems.append(f"ops {', '.join(unsupported)} do not exist on {min_target}")
    if problems:
        raise CheckFailed(f"{out.name}: {'; '.join(problems)}; nothing written")
    compressed = sum(compressed_weights(weights).values())
    return {"package_bytes": size_of(out), "weights": dict(weights.most_common()), "quantize_ops": ops["quantize"],
            "dequantize_ops": ops["dequantize"], "compressed_weights": compressed}


def _listing(weights) -> str:
    return ", ".join(f"{kind} x{n}" for kind, n in weights.most_common()) or "none"


def _unsupported_ops(ct, ops, min_target: str) -> list[str]:
    """The program's ops that coremltools' op registry has in no version as old as ``min_target``."""
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    target = getattr(ct.target, min_target)
    return sorted(op for op in ops if op in SSAOpRegistry.core_ops
                  and not any(version <= target for version in SSAOpRegistry.core_ops[op]))
