"""ONNX -> ONNX graph optimization with onnxslim (constant folding, fusion, dead-node removal)."""

from __future__ import annotations

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
