"""``--fp16``: the checked FP32 ONNX artifact with FP16 weights and compute, float32 inputs and outputs.

Converted with onnxconverter-common (``convert_float_to_float16(keep_io_types=True)``), so the file is a
drop-in for the FP32 one and TensorRT builds a strongly typed FP16 engine from it. A short list of ops stays
FP32 (``FP32_OPS``). Then, as for INT8, a fallback judged by measurement: FP32 and FP16 run on generated probe
inputs (never the check's data), and while an output is off the FP16 tolerances the nodes whose own error
grows most (an overflow past 65504, a subtraction of nearly equal values) are kept in FP32 and the model is
converted again, a few rounds at most. Each round is reported.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import CheckFailed, require

#: Ops kept in FP32 beyond onnxconverter-common's DEFAULT_OP_BLOCK_LIST (ai.onnx.ml ops, TopK, Resize, Range,
#: CumSum, Min, Max...). LayerNormalization: TensorRT warns that it overflows in FP16 after self-attention and
#: asks strongly typed networks (every network, on TensorRT 11) to run it in FP32. Nothing else by op type:
#: measured on a CNN, an nn.TransformerEncoder and a BERT (fused Attention, SkipLayerNormalization, BiasGelu,
#: whose missing float16 CPU kernels onnxruntime bridges with casts), every other op passes in FP16; what does
#: not (an overflow, a cancellation) is found per node by the rounds.
FP32_OPS = ("LayerNormalization",)
#: fp16's largest finite value: weights are clamped there (onnxconverter-common's default, 1e4, would clamp
#: weights fp16 holds).
FP16_MAX = 65504.0
#: Rounds of fallback after the first conversion; nodes kept in FP32 per round: 1, 2, 4... at most, those
#: adding at least ``MIN_GROWTH`` relative error.
MAX_ROUNDS = 4
MIN_GROWTH = 1e-2
#: Generated probe inputs (seed ``PROBE_SEED``, not the check's 0) that judge each round.
PROBE_SAMPLES = 16
PROBE_SEED = 1


def converter():
    """onnxconverter-common's float16 module, or BackendMissing naming the extra that installs it."""
    return require("onnxconverter_common.float16", "fp16")


def convert_fp16(model, node_block_list=()):
    """``model`` (an FP32 ModelProto, left as it is) with FP16 weights and compute, float32 IO."""
    import copy

    import onnx
    from onnx import helper

    float16 = converter()
    model = copy.deepcopy(model)
    # The converter retypes every value_info entry: one naming a graph output (or a name twice) would
    # contradict the float32 output it keeps; shape inference redoes the rest.
    io, seen, kept_info = {v.name for v in [*model.graph.input, *model.graph.output]}, set(), []
    for info in model.graph.value_info:
        if info.name not in io and info.name not in seen:
            kept_info.append(info)
        seen.add(info.name)
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept_info)
    # A graph output that nodes also read (BERT's last_hidden_state, read by the pooling) becomes the float32
    # cast the converter appends, and its readers would mix float32 with float16: they read the value before
    # that cast instead, through an Identity that alone makes the output.
    outputs = {o.name for o in model.graph.output}
    read = outputs & {name for node in model.graph.node for name in node.input}
    for node in list(model.graph.node):
        for k, name in enumerate(node.output):
            if name in read:
                node.output[k] = f"{name}__value"
                model.graph.node.append(helper.make_node("Identity", [f"{name}__value"], [name], name=f"{name}__output"))
    for node in model.graph.node:
        node.input[:] = [f"{name}__value" if name in read else name for name in node.input]
    casts = {node.name for node in model.graph.node if node.op_type == "Cast"}
    with warnings.catch_warnings():  # it warns once per clamped tensor: the rounds judge the damage instead
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, max_finite_val=FP16_MAX,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OPS], node_block_list=list(node_block_list))
    # The converter types a Cast-to-float's output float16 but leaves its ``to`` (a graph onnxruntime refuses):
    # the model's own casts to float cast to float16 wherever their result is now float16.
    fp16 = {v.name for v in converted.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    for node in converted.graph.node:
        if node.name in casts and node.name not in node_block_list and node.output[0] in fp16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    return converted


def build_fp16(fp32: Path, final: Path, specs, say: Callable[[str], None], sizes=None, meta=None,
               strict: bool = True) -> dict:
    """Convert ``fp32`` into ``final``; returns the record of how. When an output is still off the fp16
    tolerances after the rounds: CheckFailed, or with ``strict=False`` (--no-check) the last round's model.

    Each round is judged on an emulation (``_emulated``): onnxruntime's CPU kernels compute FP16 ops in FP32
    and drop the casts between them, so the file itself, run here, shows little of FP16's rounding. The
    emulation rounds every activation the FP16 graph stores in FP16 (overflows included), the math of each op
    staying FP32, as GPU kernels accumulate."""
    import onnx

    from ..data import generated_origin, random_feeds
    from ..spec import batched, fixed_batch
    from ..validate import TOLERANCES, compare_outputs

    float16 = converter()
    atol, rtol = TOLERANCES["fp16"][:2]
    model = onnx.load(str(fp32))
    samples = fixed_batch(specs) or PROBE_SAMPLES  # one call: a fixed batch is probed at its size
    probe_specs = batched(specs, samples)
    feeds = random_feeds(probe_specs, samples, PROBE_SEED, sizes=sizes, meta=meta)
    origin = f"{samples} samples " + generated_origin(probe_specs, PROBE_SEED, meta, sizes)
    names = [out for node in model.graph.node for out in node.output if out]
    expected = _run(model, names, feeds)
    floats = {name for name, value in expected.items() if value.dtype == np.float32}
    outputs = [o.name for o in model.graph.output]
    kept: dict[str, str] = {}  # node -> why it stays FP32
    rounds = []
    for round_ in range(MAX_ROUNDS + 1):
        candidate = convert_fp16(model, kept)
        emulated = _emulated(model, candidate, floats, kept)
        got = _run(emulated, outputs, feeds)
        check = compare_outputs({n: expected[n] for n in outputs}, {n: got[n] for n in outputs}, samples,
                                precision="fp16", inputs_from=origin, classifier=False)
        worst = max(check.outputs, key=_badness)
        rounds.append({"round": round_ + 1, "kept_fp32": sorted(kept), "passed": check.passed,
                       "worst_output": worst.name, "max_abs": worst.max_abs, "max_rel": worst.max_rel})
        say(f"FP16 round {round_ + 1} against FP32 on {origin}: " + ("passed" if check.passed else
            f"{worst.name} off ({worst.reason or f'max abs {worst.max_abs:.3g}'})"))
        if check.passed or round_ == MAX_ROUNDS:
            break
        picked = error_growth(model, expected, _run(emulated, names, feeds), floats, kept)[: 2**round_]
        if not picked:
            break
        kept.update(picked)
        say("keeping in FP32: " + "; ".join(f"{node} ({why})" for node, why in picked))
    weights = _weight_counts(candidate)
    record = {"converter": "onnxconverter-common float16.convert_float_to_float16", "version": _version(),
              "keep_io_types": True, "max_finite_val": FP16_MAX,
              "op_block_list": sorted({*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OPS}), "kept_fp32": kept,
              "rounds": rounds, "judged_on": f"{origin}, FP16 activations emulated (every stored activation rounded)",
              "tolerance": {"atol": atol, "rtol": rtol},
              "fp16_weight_share": round(weights["float16"] / max(1, weights["float16"] + weights["float32"]), 4)}
    if not check.passed and strict:
        raise CheckFailed(
            f"{final.name}: FP16 is off FP32 after {len(rounds)} round(s), worst on output {worst.name!r} "
            f"({worst.reason or f'max abs {worst.max_abs:.3g}'}) with {len(kept)} node(s) kept in FP32; nothing "
            "written. Ship the FP32 artifact (or convert with --no-check to keep this one for inspection)", record)
    onnx.save_model(candidate, str(final))
    record.update(size_fp32_bytes=fp32.stat().st_size, size_fp16_bytes=final.stat().st_size)
    return record


def _badness(output) -> tuple:
    """How far an output is off: failing ones first, then by relative error."""
    return (not output.passed, output.max_rel if output.max_rel is not None else float("inf"))


def _rounded(model, floats: set, kept) -> set:
    """The float tensors the FP16 graph stores in FP16: every one but those made and read by FP32 nodes only
    (a node kept in FP32 casts its output to FP16 for any FP16 reader) and the graph's outputs made in FP32."""
    fp32_nodes = _fp32_nodes(model, kept)
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    outputs = {o.name for o in model.graph.output}
    rounded = set()
    for node in model.graph.node:
        for name in node.output:
            if name in floats and (node.name not in fp32_nodes or (
                    name not in outputs and not all(r in fp32_nodes for r in readers.get(name, ())))):
                rounded.add(name)
    return rounded


def _fp32_nodes(model, kept) -> set:
    """The nodes the FP16 graph computes in FP32: by op type, and those ``kept``."""
    blocked = set(FP32_OPS) | set(converter().DEFAULT_OP_BLOCK_LIST)
    return {node.name for node in model.graph.node if node.op_type in blocked or node.name in kept}


def _emulated(model, candidate, floats: set, kept):
    """``model`` (FP32) computing as the FP16 ``candidate`` stores: its FP16 weights (clamped as converted),
    and a Cast to float16 and back after every activation the candidate holds in FP16."""
    import onnx
    from onnx import helper, numpy_helper

    emulated = onnx.ModelProto()
    emulated.CopyFrom(model)
    graph = emulated.graph
    converted = {i.name: i for i in candidate.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    for init in graph.initializer:
        if init.name in converted and init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(converted[init.name]).astype(np.float32),
                                                  init.name))
    rounded = _rounded(model, floats, kept)
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for k, name in enumerate(node.output):
            if name in rounded:
                node.output[k] = f"{name}__fp32"
                nodes += [helper.make_node("Cast", [f"{name}__fp32"], [f"{name}__fp16"], name=f"{name}__to_fp16",
                                           to=onnx.TensorProto.FLOAT16),
                          helper.make_node("Cast", [f"{name}__fp16"], [name], name=f"{name}__to_fp32",
                                           to=onnx.TensorProto.FLOAT)]
    del graph.node[:]
    graph.node.extend(nodes)
    return emulated


def error_growth(model, expected: dict, got: dict, floats: set, kept) -> list[tuple[str, str]]:
    """Nodes to keep in FP32, worst first, with why: those whose own output's relative error (FP16 emulated
    against FP32) grows most over their inputs'; an output that turns Inf or NaN in FP16 from finite inputs (an
    overflow past 65504) first. Where a node already kept in FP32 still ends worse than its inputs, its
    neighbours join it: the nodes that feed it (a subtraction of nearly equal FP16-rounded values) or, when its
    own output overflows on the way back to FP16, the nodes that read it."""
    error = {name: _relative_error(expected[name], got[name]) for name in floats if name in got}
    fp32_nodes = _fp32_nodes(model, kept)
    producers = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    scored: dict[str, tuple[float, str]] = {}

    def propose(node, score: float, why: str):
        if node.name and node.name not in fp32_nodes and score >= max(MIN_GROWTH, scored.get(node.name, (0.0,))[0]):
            scored[node.name] = (score, why)

    for node in model.graph.node:
        before = max((error.get(name, 0.0) for name in node.input), default=0.0)
        after = max((error.get(name, 0.0) for name in node.output), default=0.0)
        if not np.isfinite(before) or after <= before:
            continue
        score = float("inf") if not np.isfinite(after) else after - before
        peak = max((float(np.abs(expected[n]).max()) for n in node.output if n in floats and expected[n].size),
                   default=0.0)
        why = (f"{node.op_type}: FP16 overflows, FP32 values reach {peak:.3g}" if not np.isfinite(after)
               else f"{node.op_type}: relative error {before:.2g} -> {after:.2g}")
        if node.name not in fp32_nodes:
            propose(node, score, why)
        elif not np.isfinite(after):
            for name in node.output:
                for reader in readers.get(name, ()):
                    propose(reader, score, f"reads {node.name}, whose output overflows FP16 ({peak:.3g})")
        else:
            for name in node.input:
                if name in producers and name in floats:
                    propose(producers[name], score, f"feeds {node.name}, which loses its FP16-rounded input's "
                                                    f"precision ({why})")
    return [(name, why) for name, (_, why) in sorted(scored.items(), key=lambda item: -item[1][0])]


def _run(model, names, feeds) -> dict:
    """``model``'s values of tensors ``names`` (and its outputs) on ``feeds``, by onnxruntime on the CPU."""
    import onnx
    import onnxruntime as ort

    from ..runtimes.onnxrt import FLOAT16_UNSAFE, session_options

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names if n not in present)
    session = ort.InferenceSession(probe.SerializeToString(), session_options(),
                                   providers=["CPUExecutionProvider"], disabled_optimizers=list(FLOAT16_UNSAFE))
    wanted = [o.name for o in session.get_outputs()]
    return {name: np.asarray(value) for name, value in zip(wanted, session.run(wanted, dict(feeds)))}


def _relative_error(reference, value) -> float:
    """max |value - reference| over max |reference|; Inf where FP16 is non-finite and FP32 is not."""
    reference, value = np.asarray(reference, np.float64), np.asarray(value, np.float64)
    if reference.shape != value.shape or not reference.size:
        return 0.0
    finite = np.isfinite(reference)
    if (~np.isfinite(value) & finite).any():
        return float("inf")
    scale = float(np.abs(reference[finite]).max()) if finite.any() else 0.0
    return float(np.abs(value - reference)[finite].max() / scale) if scale > 0 else 0.0


def _weight_counts(model) -> dict:
    """Float weights (initializers and Constant tensors) by element type: float16 and float32."""
    import onnx

    counts = {"float16": 0, "float32": 0}
    kinds = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.FLOAT: "float32"}
    tensors = list(model.graph.initializer) + [attr.t for node in model.graph.node if node.op_type == "Constant"
                                               for attr in node.attribute if attr.name == "value"]
    for tensor in tensors:
        if tensor.data_type in kinds:
            counts[kinds[tensor.data_type]] += int(np.prod(tensor.dims)) if tensor.dims else 1
    return counts


def _version() -> str:
    from importlib.metadata import version

    return version("onnxconverter-common")
