"""TensorRT engines (``.engine``): built from a checked ONNX artifact (FP32, FP16 or Q/DQ INT8) on the device
that runs them, since an engine is tied to the GPU's compute capability and the TensorRT version.

Written against the API that TensorRT 10 and 11 share; names that only one of them has are looked up with
``getattr`` (never by version string): ``STRONGLY_TYPED`` is passed where it exists (11 makes every network
strongly typed and drops precision flags, which edgeml never sets: precision lives in the ONNX file).
Without TensorRT or a CUDA GPU the target stops with the command to run on the device (exit 3); the ONNX
artifact it starts from is already checked and in place."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

from ..errors import BackendMissing, ExportError, InputError, first_line
from ..runtimes.tensorrt import (NAME_PREFIX, engine_record, gpu_here, logger, rebuild_command,
                                 tensorrt)
from ..spec import TensorSpec
from . import Backend, Edge, named, register

COMPAT = ("none", "version", "hardware", "both")
OPT_LEVELS = range(0, 6)
DEFAULT_OPTIONS = {"workspace": None, "timing_cache": None, "opt_level": None, "compat": "none"}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


# -- options ----------------------------------------------------------------------------------------------


def check_options(options: dict) -> dict:
    """The TensorRT options with their defaults, each checked before anything is exported: ``workspace``
    (MiB, or a size such as "2GiB"; stored in bytes), ``timing_cache`` (a file, read and updated by every
    build), ``opt_level`` (the builder optimization level, 0-5), ``compat`` (none, version, hardware, both)."""
    merged = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    unknown = sorted(set(merged) - set(DEFAULT_OPTIONS))
    if unknown:
        raise InputError(f"unknown TensorRT option(s) {', '.join(unknown)}; TensorRT takes {', '.join(DEFAULT_OPTIONS)}")
    if merged["workspace"] is not None:
        merged["workspace"] = workspace_bytes(merged["workspace"])
    if merged["timing_cache"] is not None:
        cache = Path(merged["timing_cache"])
        if cache.is_dir() or not cache.parent.is_dir():
            raise InputError(f"--timing-cache {cache}: give a file in an existing folder (it is created on the first "
                             "build and reused by the next)")
        merged["timing_cache"] = str(cache)
    level = merged["opt_level"]
    if level is not None:
        if isinstance(level, str) and level.strip().isdigit():
            level = int(level)
        if isinstance(level, bool) or not isinstance(level, int) or level not in OPT_LEVELS:
            raise InputError(f"--opt-level {merged['opt_level']!r} is not a builder optimization level; use 0 to 5 "
                             "(TensorRT's default is 3; higher builds longer and may run faster)")
        merged["opt_level"] = level
    if merged["compat"] not in COMPAT:
        raise InputError(f"--trt-compat {merged['compat']!r} is not one of {', '.join(COMPAT)}")
    return merged


def workspace_bytes(value) -> int:
    """A workspace size in bytes: a number is MiB, a string may name its unit (``512MiB``, ``2GiB``, ``2G``)."""
    text = str(value).strip()
    match = _SIZE.fullmatch(text)
    if isinstance(value, bool) or not match:
        raise InputError(f"--workspace {value!r} is not a size; give MiB (2048) or a size with its unit (2GiB, 512MiB)")
    unit = match.group(2).lower() or ("" if match.group(3) else "m")
    size = int(float(match.group(1)) * 1024 ** " kmgt".index(unit or " "))
    if not 1024**2 <= size <= 1024**4:
        raise InputError(f"--workspace {value!r} is outside 1 MiB..1 TiB; give the scratch memory TensorRT may use, "
                         "e.g. 2GiB")
    return size


# -- what the build needs from TensorRT and the machine -----------------------------------------------------


def profile_shapes(specs) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """One optimization profile: {input: (min, opt, max) shapes} from the specs' dims (a fixed dim is itself
    three times, a symbolic one its range). A symbolic dim without a range cannot be built for: the error says
    how to give one."""
    shapes = {}
    for spec in specs:
        low, opt, high = [], [], []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                bounds = (dim, dim, dim)
            elif dim in spec.ranges:
                bounds = tuple(spec.ranges[dim])
            else:
                example = "x".join(("1..8" if i == axis else str(d) if isinstance(d, int) else "N")
                                   for i, d in enumerate(spec.shape))
                raise InputError(f"input {spec.name!r} has dim {dim!r} (axis {axis}) with no range: a TensorRT engine "
                                 f"is built for a range of sizes; give one with --shape {dim}=MIN..MAX or --input "
                                 f"{spec.name}:{example}")
            for kept, size in zip((low, opt, high), bounds):
                kept.append(int(size))
        shapes[spec.name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def network_flags(trt) -> int:
    """``create_network``'s flags: STRONGLY_TYPED where the enum has it (10; on 11 every network is)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def configure(trt, config, options: dict) -> dict:
    """Set ``options`` on a builder config and return what was set, for the record. No precision flag is ever
    set (TensorRT 11 has none; a strongly typed network takes its types from the ONNX file). A feature this
    TensorRT lacks is exit 3, naming it."""

    def lacking(name: str):
        return BackendMissing(f"this TensorRT has no {name}, which the TensorRT options asked for; drop the option or "
                              "use TensorRT 10 or later")

    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:  # on by default from Ampere on: FP32 layers would compute in TF32, off the FP32 check
        config.clear_flag(tf32)
    if options.get("workspace"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options["workspace"])
    if options.get("opt_level") is not None:
        if not hasattr(config, "builder_optimization_level"):
            raise lacking("builder_optimization_level")
        config.builder_optimization_level = options["opt_level"]
    compat = options.get("compat", "none")
    version = compat in ("version", "both")
    hardware = compat in ("hardware", "both")
    if version:
        flag = getattr(trt.BuilderFlag, "VERSION_COMPATIBLE", None)
        if flag is None:
            raise lacking("BuilderFlag.VERSION_COMPATIBLE")
        config.set_flag(flag)
    if hardware:
        level = getattr(getattr(trt, "HardwareCompatibilityLevel", None), "AMPERE_PLUS", None)
        if level is None or not hasattr(config, "hardware_compatibility_level"):
            raise lacking("HardwareCompatibilityLevel.AMPERE_PLUS")
        config.hardware_compatibility_level = level
    return {"version_compatible": version, "hardware_compatibility": "ampere_plus" if hardware else "none",
            "tf32": False}


def require_gpu(command: str, index: int = 0) -> dict:
    gpu = gpu_here(index)
    if gpu is None:
        raise BackendMissing(f"no CUDA GPU here (neither PyTorch with CUDA nor cuda-python finds one): an engine must be "
                             f"built on the device that runs it; there run: {command}")
    return gpu


# -- the edge -----------------------------------------------------------------------------------------------


def _parent_specs(onnx_file: Path):
    """The ONNX artifact's inputs with their dim ranges (its metadata's ``edgeml.dim_range``), and its summary."""
    info = named("onnx").inspect(onnx_file)
    return [TensorSpec.from_dict(s) for s in info["inputs"]], info


def _parse_error(parser) -> str:
    """The parser's first error with its node (name and op) where TensorRT says it, on one line."""
    if not parser.num_errors:
        return "the parser gave no reason"
    error = parser.get_error(0)
    node = []
    for method, label in (("node_name", "node"), ("node_operator", "op")):
        value = getattr(error, method, None)
        value = value() if callable(value) else None
        if value:
            node.append(f"{label} {value!r}")
    if not node and error.node() >= 0:
        node.append(f"node #{error.node()}")
    more = f" (+{parser.num_errors - 1} more)" if parser.num_errors > 1 else ""
    return f"{', '.join(node) + ': ' if node else ''}{first_line(error.desc())}{more}"


def _timing_cache(config, path: str | None) -> str:
    """Give the config a timing cache: the file's when it holds one for this device and TensorRT, else an
    empty one. Returns what was used, for the record."""
    data = Path(path).read_bytes() if path and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if data and cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return "reused"
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return "from another device or TensorRT version: started anew" if data else "new"


def _save_timing_cache(config, path: str) -> None:
    """Write the build's timing cache to ``path`` atomically, merged with what another build on this device
    and TensorRT wrote meanwhile (one from elsewhere is not merged: it is replaced)."""
    from ..files import write_bytes_atomic

    cache = config.get_timing_cache()
    if Path(path).is_file():
        previous = config.create_timing_cache(Path(path).read_bytes())
        if previous is not None:
            cache.combine(previous, ignore_mismatch=False)
    write_bytes_atomic(path, bytes(memoryview(cache.serialize())))


def build_engine(onnx_file: Path, out: Path, options: dict | None = None) -> dict:
    """Build the TensorRT engine of ``onnx_file`` at ``out`` on this machine's GPU; returns the record of the
    build (TensorRT version, GPU, compute capability, compatibility, profile shapes, workspace, optimization
    level, build seconds, and the command that rebuilds it elsewhere)."""
    options = {**DEFAULT_OPTIONS, **(options or {})}  # checked (check_options) before the export
    command = rebuild_command(onnx_file, options)
    specs, info = _parent_specs(onnx_file)
    profile = profile_shapes(specs)  # a missing range is the user's to fix, here as on the device
    trt = tensorrt(f"an engine must be built on the device that runs it; there, with pip install 'edgeml[tensorrt]', "
                   f"run: {command}")
    gpu = require_gpu(command)
    log = logger(trt)
    builder = trt.Builder(log)
    network = builder.create_network(network_flags(trt))
    network.name = NAME_PREFIX + json.dumps({"precision": info["precision"], "inputs": info["inputs"],
                                            "outputs": info["outputs"], "metadata": info["metadata"]}, separators=(",", ":"))
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_file)):
        raise ExportError(f"TensorRT {trt.__version__} cannot parse {Path(onnx_file).name}: {_parse_error(parser)}; "
                          "the op or its attributes are not supported by this TensorRT (try another opset)")
    config = builder.create_builder_config()
    record_compat = configure(trt, config, options)
    trt_profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        trt_profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(trt_profile)
    cache = _timing_cache(config, options["timing_cache"]) if options["timing_cache"] else None
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if plan is None:
        reason = log.errors[-1] if log.errors else "TensorRT gave no reason"
        raise ExportError(f"TensorRT {trt.__version__} could not build {Path(out).name} ({first_line(reason)}); "
                          "try a larger --workspace, or --opt-level 0 to see whether a tactic is at fault")
    Path(out).write_bytes(bytes(memoryview(plan)))
    if options["timing_cache"]:
        _save_timing_cache(config, options["timing_cache"])
    return {"converter": "tensorrt", "version": trt.__version__, "gpu": gpu["gpu"],
            "compute_capability": gpu["compute_capability"], **record_compat,
            "profile": {name: [list(s) for s in shapes] for name, shapes in profile.items()},
            "workspace_bytes": options["workspace"], "opt_level": options["opt_level"],
            **({"timing_cache": {"file": options["timing_cache"], "state": cache}} if cache else {}),
            "build_seconds": round(seconds, 3), "rebuild": command}


# -- the engine as edgeml reads it ----------------------------------------------------------------------------


def _inspect(path) -> dict:
    """An engine described from the engine itself where TensorRT and a GPU are here and it loads, else from the
    manifest entry beside it; exit 3 when neither can."""
    from ..inspection import summary
    from ..manifest import manifest_entry
    from ..readable import regular_file

    path = regular_file(path, "TensorRT engine")
    entry = manifest_entry(path)
    record = engine_record(entry)
    try:
        with _runtime(path) as runtime:
            inputs, outputs, metadata = runtime.inputs, runtime.outputs, dict(runtime.metadata)
            precision, producer = runtime.precision, f"TensorRT {runtime.tensorrt_version}"
    except BackendMissing as exc:
        if entry is None or record is None:
            raise BackendMissing(f"{path.name} cannot be read here ({first_line(exc)}), and no manifest beside it "
                                 "describes it") from exc
        inputs = [TensorSpec.from_dict(s) for s in entry["inputs"]]
        outputs = [TensorSpec.from_dict(s) for s in entry["outputs"]]
        metadata, precision = {}, entry.get("precision", "?")
        producer = f"TensorRT {record.get('version', '?')} (from {path.parent.name}/edgeml.json: not loadable here)"
    info = summary(path, inputs, outputs, Counter(), Counter(), ir_version=0, opsets={}, producer=producer,
                   metadata=metadata)
    info["precision"] = precision
    info["quantized"] = precision == "int8"
    if record:
        info["tensorrt"] = {k: record.get(k) for k in ("version", "gpu", "compute_capability", "version_compatible",
                                                       "hardware_compatibility", "profile", "rebuild")}
    return info


def _runtime(path, device: str = "cuda", threads: int | None = None, **options):
    """``edgeml.load``'s default device is "cpu", which no engine runs on: it means the first GPU here. An
    engine's settings were fixed when it was built: it takes no runtime options."""
    from ..runtimes.tensorrt import TensorRTRuntime

    if options:
        raise InputError(f"a TensorRT engine takes no runtime options (got {', '.join(sorted(options))}); its settings "
                         "are fixed when it is built: rebuild it with the TensorRT options (--workspace, --opt-level...)")

    return TensorRTRuntime(path, device="cuda" if device == "cpu" else device, threads=threads)


def _refuses(record: dict) -> str | None:
    """TensorRT parses plain ONNX, and builds INT8 only from symmetric Q/DQ (the tensorrt INT8 target)."""
    if record.get("fusion", {}).get("applied"):
        return ("it holds onnxruntime's fused ops (com.microsoft), which TensorRT does not parse; convert with "
                "--no-fuse")
    quantization = record.get("quantization")
    if quantization and (quantization.get("mode"), quantization.get("target")) != ("static", "tensorrt"):
        return ("TensorRT builds INT8 from symmetric Q/DQ only; convert with --int8 --calib DATA --int8-target "
                "tensorrt")
    return None


register(Backend("tensorrt", ".engine", "TensorRT engine for this machine's NVIDIA GPU (built on the device)",
                 _runtime, _inspect, tools=("tensorrt",)),
         Edge("onnx", "tensorrt", build_engine, "TensorRT strongly typed network from the ONNX file",
              options=check_options, refuses=_refuses, requires=lambda specs, options: profile_shapes(specs)))
