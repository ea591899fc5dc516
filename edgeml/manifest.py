"""edgeml.json: what was built from what, with which tools, and how it was checked.

One manifest per output folder. Converting again into the same folder replaces the entries of the
artifacts it rewrites and keeps the others, as long as they come from the same source.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from importlib import metadata
from pathlib import Path

from .errors import InputError
from .files import write_bytes_atomic

MANIFEST_NAME = "edgeml.json"
SCHEMA_VERSION = 1
_TOOLS = ("edgeml", "numpy", "onnx", "onnxruntime", "onnxslim", "torch", "scikit-learn", "skl2onnx")


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"no manifest at {path}; run edgeml convert first") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); delete it and convert again") from exc


def write_manifest(output_dir: str | Path, source: dict, artifacts: list[dict]) -> Path:
    """Merge ``artifacts`` into the folder's manifest (replacing same-named files) and write it atomically."""
    path = Path(output_dir) / MANIFEST_NAME
    kept = []
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = {}
        if previous.get("source", {}).get("sha256") == source.get("sha256") and source.get("sha256"):
            written = {a["file"] for a in artifacts}
            kept = [a for a in previous.get("artifacts", []) if a.get("file") not in written]
    manifest = {
        "schema": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "artifacts": kept + artifacts,
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "machine": platform.machine(), "tools": tool_versions()},
    }
    write_bytes_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return path
