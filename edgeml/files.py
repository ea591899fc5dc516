"""File helpers shared by every writer: atomic writes, temporary names, content hashes.

Artifacts are written under a temporary name in their final folder and renamed into place, so an
interrupted or failed job never leaves a half-written file where a user or CI would pick it up. A
temporary name says which host and process writes it (``.NAME.HOST.PID.RANDOM.tmp``): what a SIGKILL
leaves behind is removed by the next write into that folder once its process is gone, and never while
it lives (nor when it belongs to another host sharing the folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InputError

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_KINDS = ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def sha256(path: str | os.PathLike) -> str:
    """The file's sha256; a folder's (an artifact such as a CoreML package) is the sha256 of its files'
    relative paths and hashes, in path order: any change to a name or a byte inside changes it."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        digest = hashlib.sha256()
        for name, entry in folder_entries(path):
            digest.update(f"{name}\0{'folder' if entry.is_dir() else sha256(entry)}\n".encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def size_of(path: str | os.PathLike) -> int:
    """Bytes of a file, or of all the files in a folder."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        return sum(entry.stat().st_size for _, entry in folder_entries(path) if not entry.is_dir())
    return path.stat().st_size


def folder_entries(folder: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) for every file and folder under ``folder``, sorted; a link or special file
    inside is refused: what an artifact holds is its own bytes."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            entry = Path(root) / name
            mode = os.lstat(entry).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise InputError(f"{entry} is a {'link' if stat.S_ISLNK(mode) else kind_of(mode)} inside the artifact "
                                 f"folder {folder}; an artifact folder holds only files and folders")
            found.append((entry.relative_to(folder).as_posix(), entry))
    return sorted(found)


def kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "regular file" if stat.S_ISREG(mode) else "special file")


def check_target(final: str | os.PathLike, folder: bool = False) -> None:
    """Refuse to replace anything but what ``final`` would be: a regular file (or, for a ``folder`` artifact, a
    folder). A device (``/dev/full``), a FIFO or a folder given as an output file stays what it is."""
    try:
        mode = os.lstat(final).st_mode if folder else os.stat(final).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot write {final} ({exc.strerror}); give another path") from exc
    if folder and not stat.S_ISDIR(mode):
        raise InputError(f"{final} is a {kind_of(mode)}, not a folder; this artifact is a folder: give another path")
    if not folder and not stat.S_ISREG(mode):
        raise InputError(f"{final} is a {kind_of(mode)}, not a regular file; edgeml writes only to regular files "
                         "or new paths: give another path")


def temp_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) of an edgeml temporary name, None for any other name."""
    match = _TEMP.match(name)
    return (match["host"], int(match["pid"])) if match else None


def process_alive(host: str, pid: int) -> bool:
    """Whether a temporary name's writer may still run (a process of another host: assume so)."""
    if host != _HOST or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def stale_temps(folder: str | os.PathLike) -> list[Path]:
    """edgeml's temporary files and folders in ``folder`` whose process is gone: what a kill left behind."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    owners = ((Path(e.path), temp_owner(e.name)) for e in entries)
    return sorted(path for path, owner in owners if owner and not process_alive(*owner))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def temp_path(final: str | os.PathLike, folder: bool = False, final_folder: bool = False) -> Iterator[Path]:
    """Yield a temporary file (or, with ``folder``, an empty folder) beside ``final``, named for this host and
    process; it is removed when the block ends if it is still there. Stale temporaries are removed first.
    ``final_folder``: ``final`` is a folder artifact, which an older version of it may be."""
    final = Path(final)
    check_target(final, final_folder)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in stale_temps(final.parent):
            _remove(stale)
        options = dict(prefix=f".{final.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=final.parent)
        if folder:
            tmp = Path(tempfile.mkdtemp(**options))
        else:
            fd, name = tempfile.mkstemp(**options)
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise InputError(f"cannot write in {final.parent} ({exc.strerror}); choose another output folder") from exc
    try:
        yield tmp
    finally:
        _remove(tmp)


def publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` into place as ``final``, readable by others (mkstemp makes files private). A folder
    that replaces an old one is swapped with it in one step where the OS can (Linux ``renameat2``
    RENAME_EXCHANGE), so ``final`` is at every moment one whole version; elsewhere the old one goes aside
    first, and ``final`` is missing for the moment between the two renames, never mixed."""
    folder = tmp.is_dir()
    check_target(final, folder)
    os.chmod(tmp, (0o777 if folder else 0o666) & ~_umask())
    try:
        if folder and os.path.lexists(final):
            if not _exchange(tmp, final):
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_HOST}.{os.getpid()}.", suffix=".tmp",
                                            dir=final.parent))
                os.replace(final, old)
                os.replace(tmp, final)
                tmp = old
            _remove(tmp)  # the old version, now under the temporary name
        else:
            os.replace(tmp, final)
    except OSError as exc:
        raise InputError(f"cannot write {final} ({exc.strerror}); give another path") from exc


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 with RENAME_EXCHANGE); False where that is not available."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def remove_path(path: Path) -> None:
    """Delete an artifact: a file, or a folder artifact with everything in it."""
    _remove(path)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only if the block succeeds."""
    with temp_path(final) as tmp:
        yield tmp
        publish(tmp, Path(final))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
