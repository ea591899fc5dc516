"""edgeml.json: what was built from what, with which tools, and how it was checked.

One manifest per output folder, one entry per artifact, each with the source it was built from.
Converting into the same folder replaces the entries of the files it rewrites and keeps the others.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from importlib import metadata
from pathlib import Path

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


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def manifest_entry(artifact: str | Path) -> dict | None:
    """The manifest's entry for an artifact file, if its folder has a manifest that lists it."""
    artifact = Path(artifact)
    entries = _read(artifact.parent / MANIFEST_NAME).get("artifacts", [])
    return next((e for e in entries if e.get("file") == artifact.name), None)


def write_manifest(output_dir: str | Path, artifacts: list[dict], drop=()) -> Path:
    """Merge ``artifacts`` into the folder's manifest (replacing same-named files, removing ``drop``) and
    write it atomically."""
    path = Path(output_dir) / MANIFEST_NAME
    written = {a["file"] for a in artifacts} | set(drop)
    kept = [a for a in _read(path).get("artifacts", []) if a.get("file") not in written]
    manifest = {
        "schema": SCHEMA_VERSION,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "artifacts": kept + artifacts,
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "machine": platform.machine(), "tools": tool_versions()},
    }
    write_bytes_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return path
