"""``edgeml.verify``: does an output folder hold what its manifest says, and nothing half-written? (The module
is not named ``verify``: importing it would hide the function of that name on the ``edgeml`` package.)

Checks every listed artifact (present, a regular file or, for a folder backend, a folder, size and sha256 as
listed, loadable by its backend) and the companions each entry lists (a tokenizer beside its artifact),
artifacts the manifest does not list, and temporary files left by a killed writer. It holds the
folder's lock while it looks (where it may write there), so a convert running meanwhile is seen
before or after one of its steps, never in the middle.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, no_such_file
from . import backends
from .files import kind_of, process_alive, sha256, size_of, temp_owner
from .manifest import MANIFEST_NAME, folder_lock, plain_name as _plain, read_manifest


@dataclass
class VerifyResult:
    folder: Path
    verified: list[str] = field(default_factory=list)  # listed files that are as listed
    problems: list[str] = field(default_factory=list)  # one line each; any of them fails the folder
    notes: list[str] = field(default_factory=list)  # worth saying, not wrong (a write in progress)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.folder}: {len(self.verified)} artifact(s) as {MANIFEST_NAME} lists them"
        return f"{self.folder}: {len(self.problems)} problem(s), {len(self.verified)} artifact(s) as listed"


def verify(folder: str | os.PathLike) -> VerifyResult:
    """Check ``folder`` against its manifest; the result lists what is wrong, one line per problem."""
    folder = Path(folder)
    if not folder.is_dir():
        if not folder.exists():
            raise no_such_file(folder, "folder")
        raise InputError(f"{folder} is not a folder; edgeml verify checks an output folder of edgeml convert")
    writable = os.access(folder, os.W_OK)  # a read-only folder has no writer to wait for
    with folder_lock(folder) if writable else contextlib.nullcontext():
        return _verify(folder)


def _verify(folder: Path) -> VerifyResult:
    result = VerifyResult(folder)
    if not os.path.lexists(folder / MANIFEST_NAME):
        result.problems.append(f"{MANIFEST_NAME}: missing; this folder was not written by edgeml convert, or its "
                               "manifest was deleted: convert again")
        entries = None
    else:
        try:
            entries = read_manifest(folder)["artifacts"]
        except InputError as exc:
            result.problems.append(str(exc))
            entries = None
    listed: set[str] = set()
    for entry in entries or []:
        name = entry["file"]
        problem = f"{name}: listed twice in {MANIFEST_NAME}" if name in listed else _check_entry(folder, entry)
        listed.add(name)
        if problem:
            result.problems.append(problem)
        else:
            result.verified.append(name)
    try:
        paths = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list {folder} ({exc.strerror}); run edgeml verify as a user who can read it") from exc
    for path in paths:
        name, owner = path.name, temp_owner(path.name)
        if owner and process_alive(*owner):
            result.notes.append(f"{name}: being written by process {owner[1]} on {owner[0]}")
        elif owner:
            result.problems.append(f"{name}: left by process {owner[1]}, which is gone (a killed write): delete it "
                                   "(the next convert into this folder does)")
        elif name.startswith(".") and name.endswith(".tmp"):
            result.problems.append(f"{name}: a leftover temporary file (an interrupted write): delete it")
        elif entries is not None and backends.backend_for(name) is not None and name not in listed:
            result.problems.append(f"{name}: not in {MANIFEST_NAME} (an interrupted convert, or copied in by hand): "
                                   "convert again, or move it away")
    return result


def _check_entry(folder: Path, entry: dict) -> str | None:
    """What is wrong with one listed file and its companions, or None."""
    problem = _check_file(folder, entry)
    companions = entry.get("companions", [])
    if problem or not companions:
        return problem
    if not isinstance(companions, list) or not all(isinstance(c, dict) and _plain(c.get("file")) for c in companions):
        return f"{entry['file']}: its companions are not a list of files of this folder; convert again"
    problems = [p for p in (_check_file(folder, c, f"{entry['file']} needs ") for c in companions) if p]
    return "; ".join(problems) or None


def _check_file(folder: Path, entry: dict, prefix: str = "") -> str | None:
    """What is wrong with one listed file (an artifact or a companion), or None."""
    name = entry["file"]
    path = folder / name
    digest, size = entry.get("sha256"), entry.get("size_bytes")
    if not isinstance(digest, str) or not isinstance(size, int):
        return f"{prefix}{name}: its entry has no sha256 or size_bytes; convert again"
    backend = backends.backend_for(name) if not prefix else None
    folder = backend is not None and backend.folder
    try:
        info = os.lstat(path) if folder else os.stat(path)
        if not (stat.S_ISDIR(info.st_mode) if folder else stat.S_ISREG(info.st_mode)):
            return f"{prefix}{name}: a {kind_of(info.st_mode)}, not a {'folder' if folder else 'regular file'}"
        found = size_of(path)
        if found != size:
            return f"{prefix}{name}: {found} bytes, the manifest says {size}: the {'folder' if folder else 'file'} changed after it was built"
        if sha256(path) != digest:
            return f"{prefix}{name}: sha256 differs from the manifest's: the {'folder' if folder else 'file'} changed after it was built"
    except FileNotFoundError:
        return f"{prefix}{name}: listed in {MANIFEST_NAME} but missing"
    except OSError as exc:
        return f"{prefix}{name}: cannot be read ({exc.strerror})"
    except InputError as exc:  # a link or device inside a folder artifact
        return f"{prefix}{name}: {exc}"
    if backend is not None:
        try:
            backend.inspect(path)  # it loads: the backend reads it as an artifact of its kind
        except InputError as exc:
            return f"{name}: {exc}"
    return None
