"""edgeml.json: what was built from what, with which tools, and how it was checked.

One manifest per output folder, one entry per artifact, each with the source it was built from.
Converting into the same folder replaces the entries of the files it rewrites and keeps the others.

The manifest never lies: every listed file is present with the listed sha256 at every moment, whatever
kills the writer. Every update reads, merges and writes under an exclusive lock on the folder (so two
converts into one folder keep both entries), an entry is dropped before its file is replaced or removed,
and a new file is listed only once it is in place.

An entry may list companions: files its artifact needs beside it (``NAME.tokenizer.json``), each with its
sha256. They are installed before the entry is listed, and removed with the last entry that lists them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import stat
from importlib import metadata
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .files import check_target, kind_of, publish, remove_path, sha256, size_of, write_bytes_atomic

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent converts into one folder are not serialized there
    fcntl = None

MANIFEST_NAME = "edgeml.json"
#: Exists only while a writer holds the folder's lock (or after a kill, until the next writer takes it).
LOCK_NAME = ".edgeml.lock"
SCHEMA_VERSION = 1


def tool_versions() -> dict[str, str]:
    """The versions of edgeml and of every package a backend or a source framework names (their ``tools``)."""
    from . import backends, sources

    versions = {}
    for name in dict.fromkeys(("edgeml", "numpy", *backends.tools(), *sources.tools())):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (a flock on its lock file, released by the kernel if we die).

    The holder removes the lock file before releasing it, so nothing stays behind; a waiter that then
    gets the lock on the removed file sees that the name no longer leads to it and tries again.
    """
    path = Path(folder) / LOCK_NAME
    if fcntl is None:
        yield
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as exc:
            raise InputError(f"cannot lock {folder} ({exc.strerror}); choose another output folder, "
                             f"or remove {path} if it is not a regular file") from exc
        try:
            mine = os.fstat(fd)
            if not stat.S_ISREG(mine.st_mode):
                raise InputError(f"{path} is a {kind_of(mine.st_mode)}, not edgeml's lock file; remove it")
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def read_manifest(folder: str | os.PathLike) -> dict:
    """The folder's manifest (``{"artifacts": []}`` when there is none yet).

    A manifest that is not one (a list, garbage, a folder) is refused, not replaced: replacing it would
    silently drop the entries it may hold."""
    path = Path(folder) / MANIFEST_NAME
    fix = "move it away (or delete it) and convert again"
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path} is a {kind_of(mode)}, not an edgeml manifest; {fix}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"artifacts": []}
    except NotADirectoryError as exc:
        raise InputError(f"cannot write in {folder} ({exc.strerror}); choose another output folder") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror}); fix its permissions or {fix}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not an edgeml manifest (not UTF-8 text); {fix}") from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not an edgeml manifest (invalid JSON: {exc.msg} at line {exc.lineno}); {fix}") from exc
    except RecursionError as exc:
        raise InputError(f"{path} is not an edgeml manifest (JSON nested too deep); {fix}") from exc
    entries = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and plain_name(e.get("file")) for e in entries):
        what = "its artifacts are not a list of entries with a file name" if isinstance(manifest, dict) else \
            f"a JSON {type(manifest).__name__}, not an object"
        raise InputError(f"{path} is not an edgeml manifest ({what}); {fix}")
    return manifest


def manifest_entry(artifact: str | Path) -> dict | None:
    """The manifest's entry for an artifact file, if its folder has a manifest that lists it."""
    artifact = Path(artifact)
    entries = read_manifest(artifact.parent)["artifacts"]
    return next((e for e in entries if e.get("file") == artifact.name), None)


def _write(folder: Path, entries: list[dict]) -> Path:
    path = folder / MANIFEST_NAME
    manifest = {
        "schema": SCHEMA_VERSION,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "artifacts": entries,
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "machine": platform.machine(), "tools": tool_versions()},
    }
    write_bytes_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return path


def _without(folder: Path, names: set[str]) -> list[dict]:
    """The manifest's entries less ``names``, the manifest rewritten first if it listed any of them."""
    entries = read_manifest(folder)["artifacts"]
    kept = [e for e in entries if e["file"] not in names]
    if len(kept) != len(entries):
        _write(folder, kept)
    return kept


def install(tmp: Path, final: Path, entry: dict, companions: dict[str, Path] | None = None) -> Path:
    """Move a finished artifact into place and list it: under the folder's lock, drop ``final``'s old
    entry, rename ``tmp`` to ``final``, then add ``entry`` (whose sha256 is ``tmp``'s). A kill between
    any two steps leaves the manifest true (at worst ``final`` is present but not listed yet).

    ``companions``: name -> file the artifact needs beside it, moved into place (unless it is there already)
    before ``final``. Other entries that list one of them with other bytes are dropped first (their artifact
    was built with another tokenizer); companions no entry lists any more are removed."""
    folder = final.parent
    listed = [companion_record(name, path) for name, path in (companions or {}).items()]
    new = {c["file"]: c["sha256"] for c in listed}
    with folder_lock(folder):
        before = read_manifest(folder)["artifacts"]
        kept = [e for e in before if e["file"] != final.name
                and all(new.get(c["file"], c.get("sha256")) == c.get("sha256") for c in _companions(e))]
        if len(kept) != len(before):
            _write(folder, kept)
        for name, path in (companions or {}).items():
            if not (folder / name).exists() or not os.path.samefile(path, folder / name):
                publish(path, folder / name)
        _remove_orphans(folder, kept + [{"file": final.name, "companions": listed}], set(_names(before)))
        publish(tmp, final)
        return _write(folder, kept + [{**entry, "companions": listed} if listed else entry])


def companion_record(name: str, path: Path) -> dict:
    return {"file": name, "sha256": sha256(path), "size_bytes": size_of(path)}


def remove_artifact(final: Path) -> None:
    """Drop ``final``'s entry from the manifest, then remove the file and the companions no other entry lists."""
    if not final.parent.is_dir():
        return
    with folder_lock(final.parent):
        entries = read_manifest(final.parent)["artifacts"]
        kept = _without(final.parent, {final.name})
        check_target(final, folder=final.is_dir() and _folder_artifact(final))
        remove_path(final)
        _remove_orphans(final.parent, kept, set(_names(entries)))


def _companions(entry: dict) -> list[dict]:
    found = entry.get("companions")
    return [c for c in found if isinstance(c, dict) and plain_name(c.get("file"))] if isinstance(found, list) else []


def _names(entries: list[dict]) -> list[str]:
    return [c["file"] for e in entries for c in _companions(e)]


def _remove_orphans(folder: Path, entries: list[dict], names: set[str]) -> None:
    """Remove the companion files among ``names`` that no entry of ``entries`` lists (nor names as an artifact)."""
    needed = set(_names(entries)) | {e["file"] for e in entries}
    for name in names - needed:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


def plain_name(name) -> bool:
    """A manifest lists files of its own folder only: a name, never a path (``../x``) or something odd."""
    return isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name and Path(name).name == name


def _folder_artifact(path: Path) -> bool:
    """Whether ``path`` names an artifact whose backend writes folders (a CoreML package), by its suffix."""
    from . import backends

    backend = backends.backend_for(path)
    return backend is not None and backend.folder
