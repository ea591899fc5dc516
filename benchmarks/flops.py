"""FLOPs of an ONNX graph (Conv, Gemm, MatMul: 2 per multiply-add) and this CPU's peak, for "distance to
the limit": achieved GFLOP/s over p50 next to what the cores could do at best."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: FMA units per core assumed for the peak: two on server x86 cores with AVX2/AVX-512 (Skylake-SP and later,
#: Zen 2 and later). The figure is a stated assumption, not a reading.
FMA_UNITS = 2


def count_flops(path: str | Path, shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-add FLOPs of one inference with inputs of the given shapes (dims made concrete first)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    for value in model.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
                dim.ClearField("dim_param")
                dim.dim_value = size
    model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    known = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
        if dims and all(dims):
            known[value.name] = dims
    total = 0
    for node in model.graph.node:
        out = known.get(node.output[0])
        if out is None:
            continue
        if node.op_type == "Conv" and node.input[1] in known:
            weight = known[node.input[1]]  # (out channels, in channels / groups, kh, kw)
            total += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul") and node.input[0] in known:
            a = known[node.input[0]]
            transposed = node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
            inner = a[-2] if transposed else a[-1]
            total += 2 * int(np.prod(out)) * int(inner)
    return total


def cpu_peak_gflops(cores: int | None = None) -> dict:
    """cores x SIMD fp32 lanes x 2 (FMA) x FMA units x clock, from /proc/cpuinfo."""
    from edgeml.environment import cpu_isa

    isa = cpu_isa()
    lanes = 16 if "avx512f" in isa else 8 if "avx2" in isa else 4
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                mhz = max(mhz, float(line.split(":")[1]))
    except OSError:
        pass
    cores = cores or os.cpu_count() or 1
    peak = cores * lanes * 2 * FMA_UNITS * mhz / 1e3
    # INT8: VNNI's vpdpbusd does 4 multiply-adds per 32-bit lane, 4x the FP32 FMA; AVX2 pairs of
    # vpmaddubsw/vpmaddwd about 2x. Stated assumptions, like FMA_UNITS.
    int8_factor = 4 if {"avx512_vnni", "avx_vnni", "amx"} & set(isa) else 2
    return {"cores": cores, "fp32_lanes": lanes, "fma_units": FMA_UNITS, "ghz": mhz / 1e3, "peak_gflops": peak,
            "int8_factor": int8_factor, "peak_int8_gops": peak * int8_factor}
