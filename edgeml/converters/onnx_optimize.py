"""ONNX -> ONNX graph optimization: onnxslim (constant folding, dead-node removal), then onnxruntime's
transformer fusions where they match."""

from __future__ import annotations

from collections import Counter

from ..errors import first_line


def optimize_onnx(proto):
    """Returns ``(ModelProto, record)``; when onnxslim cannot handle a graph, keeps it as it is and says why."""
    try:
        import onnxslim
    except ImportError:
        return proto, {"optimizer": "onnxslim", "applied": False,
                       "reason": "onnxslim is not installed (pip install onnxslim, or the torch/sklearn extras)"}

    before = len(proto.graph.node)
    try:
        slimmed = onnxslim.slim(proto)
    except Exception as exc:  # noqa: BLE001 - an optimizer failure must not fail the conversion
        return proto, {"optimizer": "onnxslim", "version": onnxslim.__version__, "applied": False,
                       "reason": f"onnxslim failed ({first_line(exc)})"}
    return slimmed, {"optimizer": "onnxslim", "version": onnxslim.__version__, "applied": True,
                     "nodes_before": before, "nodes_after": len(slimmed.graph.node)}


def fuse_for_ort(proto):
    """onnxscript's onnxruntime fusions (Attention, SkipLayerNormalization, BiasGelu...) on a transformer graph.

    Returns ``(ModelProto, record)``. The fused graph is kept only when something was fused; it holds
    com.microsoft contrib ops, so it runs on onnxruntime (not on any ONNX runtime). Like every step, the
    result is checked against the source afterwards.
    """
    try:
        import onnx_ir as ir
        import onnxscript
        from onnxscript.rewriter import ort_fusions
    except ImportError:
        return proto, {"fuser": "onnxscript ort_fusions", "applied": False, "reason": "onnxscript is not installed"}
    record = {"fuser": "onnxscript ort_fusions", "version": onnxscript.__version__}
    try:
        model = ir.from_proto(proto)
        fused_model, counts = ort_fusions.optimize_for_ort(model)
        fused = {op: n for op, n in counts.items() if n}
        if not fused:
            return proto, {**record, "applied": False, "reason": "nothing to fuse"}
        result = ir.to_proto(fused_model)
    except Exception as exc:  # noqa: BLE001 - a fuser failure keeps the unfused graph
        return proto, {**record, "applied": False, "reason": f"ort_fusions failed ({first_line(exc)})"}
    try:  # a rewrite onnxruntime cannot load (e.g. a Gemm left with rank-3 inputs on GPT-2) is worse than none
        import onnxruntime

        onnxruntime.InferenceSession(result.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        return proto, {**record, "applied": False,
                       "reason": f"onnxruntime cannot load the fused graph ({first_line(exc)}); kept the unfused one"}
    made = Counter(node.op_type for node in result.graph.node if node.domain == "com.microsoft")
    return result, {**record, "applied": True, "fused": dict(made.most_common()), "rules": fused,
                    "needs": "onnxruntime (com.microsoft contrib ops)"}
