"""INT8 targets: the device an INT8 model is for fixes its recipe, and the arithmetic that judges it.

The recipe (activation signedness and symmetry, weight bits) comes from the target alone, never from the
machine that builds, so the same command writes the same file on every CI runner. Why the recipes differ:
x86 CPUs without VNNI multiply uint8 by int8 with VPMADDUBSW, which adds pairs of products into int16 and
saturates (255 x 127 x 2 > 32767); with 7-bit weights (``reduce_range``) a pair stays below 2^15, so the
``x86`` recipe is exact on every x86 CPU. VNNI/AMX, ARM dot products and TensorRT accumulate in int32.

The accuracy gate judges every target with exact integer arithmetic, on any host: it runs a copy of the
model whose int8 weights are stored as uint8 (w + 128, zero point + 128: the same numbers), which
onnxruntime multiplies with its U8U8 kernels; they widen to 16 bits before multiplying and never saturate
(where onnxruntime has no fused kernel for a pair of types, it runs the Q/DQ graph as written, in float).
That is what VNNI, ARM and TensorRT compute, so a verdict does not depend on the CPU that judged it:
tests/test_int8.py checks it under qemu's Haswell model, an AVX2 CPU without VNNI. onnxruntime's own switch
for this (``session.x64quantprecision``) fails on weights shared by two nodes (onnxruntime 1.32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

JUDGED_WITH = "exact integer arithmetic (int8 weights run as uint8: no 16-bit saturation), the same on every CPU"
#: op -> (weight, zero point) input positions of the int8 weights in the models edgeml's quantizers write.
_WEIGHTS = {"DequantizeLinear": ((0, 2),), "MatMulInteger": ((1, 3),), "QAttention": ((1, 7),),
            "DynamicQuantizeLSTM": ((1, 9), (2, 11))}
#: ISA extensions (environment.cpu_isa names) whose int8 dot products accumulate in int32.
INT32_DOT = frozenset({"avx512_vnni", "avx_vnni", "amx"})


@dataclass(frozen=True)
class Target:
    name: str
    activations: str  # static INT8 activations: "uint8" or "int8"
    symmetric_activations: bool
    weight_bits: int  # 7 = reduce_range: pairs of uint8 x int8 products fit in int16
    dynamic: bool  # whether dynamic INT8 (MatMulInteger, activations quantized at run time) runs there
    device: str  # where its artifacts compute exactly what the gate judged
    requires: frozenset = frozenset()  # ISA extensions one of which the device must have

    @property
    def reduce_range(self) -> bool:
        return self.weight_bits < 8

    def recipe(self, static: bool, per_channel: bool = True) -> dict:
        """The recipe as the report and the manifest (build.quantization.recipe) record it. Static INT8 is
        always per channel; dynamic INT8 per channel unless per-tensor weights were asked for or chosen."""
        symmetry = "symmetric" if self.symmetric_activations else "asymmetric"
        return {
            "activations": f"{self.activations} {symmetry}" if static else "uint8, quantized at run time",
            "weights": f"int8 symmetric per {'channel' if static or per_channel else 'tensor'}",
            "weight_bits": self.weight_bits,
            "reduce_range": self.reduce_range,
            "runs_exactly_on": self.device,
        }


TARGETS = {t.name: t for t in (
    Target("x86", "uint8", False, 7, True, "every x86-64 CPU (AVX2, AVX-512, VNNI, AMX) with onnxruntime"),
    Target("x86-vnni", "uint8", False, 8, True, "x86-64 CPUs with AVX-512 VNNI, AVX-VNNI or AMX; on AVX2-only CPUs "
           "onnxruntime's int16 sums saturate", INT32_DOT),
    Target("arm64", "int8", False, 8, True, "ARM64 CPUs with onnxruntime (CPU or XNNPACK): signed int8 as in TFLite"),
    Target("tensorrt", "int8", True, 8, False, "TensorRT's explicit quantization (zero points 0)"),
)}
#: Right for most deployments: a CPU box of any x86 kind, at the cost of one weight bit where VNNI exists.
DEFAULT_TARGET = "x86"


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise InputError(f"unknown --int8-target {name!r}; use one of {', '.join(TARGETS)} (default {DEFAULT_TARGET})")
    return TARGETS[name]


def exact_copy(path: Path) -> bytes:
    """The model at ``path`` with its int8 weights stored as uint8, serialized: what the gate runs."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    fresh: dict[str, str] = {}  # int8 initializer -> its uint8 twin (shared weights are converted once)
    for node in graph.node:
        for w, zp in _WEIGHTS.get(node.op_type, ()):
            names = node.input[w], node.input[zp] if len(node.input) > zp else ""
            weight = initializers.get(names[0])
            if weight is None or weight.data_type != onnx.TensorProto.INT8 or names[1] not in initializers:
                continue  # an activation, or no zero point (edgeml's quantizers always write one)
            for name in names:
                if name not in fresh:
                    values = numpy_helper.to_array(initializers[name]).astype(np.int16) + 128
                    fresh[name] = f"{name}.as_uint8"
                    graph.initializer.append(numpy_helper.from_array(values.astype(np.uint8), fresh[name]))
            node.input[w], node.input[zp] = fresh[names[0]], fresh[names[1]]
    return model.SerializeToString()


def judging_runtime(path: Path):
    """An OnnxRuntime computing ``path``'s int8 products exactly (``exact_copy``), on any CPU."""
    from ..runtimes.onnxrt import OnnxRuntime

    return OnnxRuntime(exact_copy(path))
