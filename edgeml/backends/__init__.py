"""The backend table: every artifact format edgeml builds, loads, inspects and records, one entry each,
and the edges (converters) between formats. A target is a module here that calls ``register``, plus its
line in ``_BUILT_IN``; the pipeline, ``edgeml.load``, ``edgeml inspect`` and the manifests read the table and
name no backend themselves."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import InputError


@dataclass(frozen=True)
class Backend:
    """An artifact format: ``suffix`` names its files (or folders, with ``folder``); ``runtime(path, device,
    threads, **options)`` opens one behind the Runtime contract (``options``: the backend's own; onnxruntime
    hands them to its GPU provider, which judges them); ``inspect(path)`` describes one as ``edgeml inspect``
    prints it, and is how ``edgeml verify`` proves that one loads (an InputError when not); ``tools`` are the
    packages whose versions manifests and bench fingerprints record."""

    name: str
    suffix: str
    description: str
    runtime: Callable
    inspect: Callable
    tools: tuple[str, ...] = ()
    folder: bool = False


@dataclass(frozen=True)
class Edge:
    """A converter from one format to another: ``build(source_artifact, output_path)`` writes the output and
    returns the record of how that goes into the manifest (``converter``: the tool, required; its version and
    options). An edge from a source framework (``torch``) builds from the loaded source model instead:
    ``build_source(source_model, output_path, options)``, with ``options(given) -> options with defaults``
    checking the target's options before anything is exported (an edge with ``options`` builds with them:
    ``build(source_artifact, output_path, options)``). ``reference(source_artifact)``: the source opened so
    that it computes as the output must (the same graph optimizations), which the output is checked against;
    default its backend's runtime. ``refuses(record)``: why the edge cannot start from an artifact whose
    manifest build record is ``record`` (e.g. ONNX fused for onnxruntime, dynamic INT8), None when it can.
    ``requires(specs, options)``: an InputError when a model with these inputs cannot be built with these
    (checked) options (TensorRT: a range for every symbolic dim; CoreML images: one (1, C, H, W) input), raised
    before anything is exported."""

    source: str
    target: str
    build: Callable[[Path, Path], dict] | None = None
    description: str = ""
    reference: Callable | None = None
    options: Callable[[dict], dict] | None = None
    build_source: Callable | None = None
    refuses: Callable[[dict], str | None] | None = None
    requires: Callable[[list, dict], None] | None = None

    def refusal(self, record: dict) -> str | None:
        return self.refuses(record) if self.refuses else None


BACKENDS: dict[str, Backend] = {}
EDGES: list[Edge] = []
_BUILT_IN = ("onnx", "ort", "coreml", "tensorrt")  # one line per target: the modules that register themselves


def register(backend: Backend, *edges: Edge) -> None:
    BACKENDS[backend.name] = backend
    EDGES.extend(edge for edge in edges if edge not in EDGES)


def named(name: str) -> Backend:
    """The backend called ``name``, or an error listing those this edgeml builds."""
    if name not in BACKENDS:
        raise InputError(f"unknown target {name!r}; this edgeml builds: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backend_for(path: str | Path) -> Backend | None:
    """The backend whose artifacts look like ``path`` (by suffix), or None for a source model file."""
    suffix = Path(path).suffix.lower()
    return next((b for b in BACKENDS.values() if b.suffix == suffix), None)


def inspect(path: str | Path) -> dict:
    """A summary of an artifact (``inspection.summary``), by the backend its format belongs to; ``edgeml
    inspect`` prints it."""
    from ..errors import no_such_file

    path = Path(path)
    backend = backend_for(path)
    if not path.exists():
        raise no_such_file(path)
    if path.is_dir() and not (backend and backend.folder):
        raise InputError(f"{path} is a folder; edgeml inspect reads one artifact (edgeml verify {path} checks a "
                         "folder against its manifest)")
    if backend is None:
        kinds = ", ".join(b.suffix for b in BACKENDS.values())
        raise InputError(f"edgeml inspect reads artifacts ({kinds}); {path} is not one (convert it first: "
                         f"edgeml convert {path})")
    return backend.inspect(path)


def path_to(target: str, start: str = "onnx") -> list[Edge]:
    """The edges that lead from ``start`` to ``target``, shortest first found (breadth first); [] when
    ``target`` is ``start``. An unreachable target is an error naming what can be built."""
    named(target)
    routes: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier and target not in routes:
        following = []
        for edge in EDGES:
            if edge.source in frontier and edge.target not in routes:
                routes[edge.target] = routes[edge.source] + [edge]
                following.append(edge.target)
        frontier = following
    if target not in routes:
        raise InputError(f"no converter leads from {start} to {target}; reachable from {start}: "
                         f"{', '.join(routes)}")
    return routes[target]


def plan(target: str, source_format: str) -> list[Edge]:
    """The edges that build ``target`` for a model of ``source_format``: straight from the source model where
    an edge starts there (CoreML from torch), else from the ONNX artifact. An error names what the target is
    built from when neither leads there."""
    if source_format != "onnx":
        try:
            return path_to(target, source_format)
        except InputError:
            pass
    try:
        return path_to(target, "onnx")
    except InputError:
        starts = " or ".join(sorted({edge.source for edge in EDGES if edge.target == target}))
        fix = (f"convert the {starts} model itself (the source, not an export of it)" if source_format == "onnx"
               else f"this version builds it from {starts} models only; use --to onnx")
        raise InputError(f"--to {target} is built from a {starts} model, and this one is {source_format}: {fix}") from None


def tools() -> tuple[str, ...]:
    """Every registered backend's tools, in registration order, once each."""
    return tuple(dict.fromkeys(tool for backend in BACKENDS.values() for tool in backend.tools))


for _module in _BUILT_IN:
    importlib.import_module(f"{__name__}.{_module}")
