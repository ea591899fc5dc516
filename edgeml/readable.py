"""Opening a user's file: regular files only.

A FIFO blocks the first read forever, ``/dev/zero`` never ends and a folder fails deep inside a framework;
every path a user gives is checked here first, so that each of them fails at once with its name.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputError, no_such_file

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it names a readable regular file (or a link to one), else an InputError naming it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode  # follows links: a link to /dev/zero is a device
    except FileNotFoundError:
        raise no_such_file(path, what) from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path} ({exc.strerror}); check the path") from exc
    target = "" if not path.is_symlink() else f" (a link to {os.path.realpath(path)})"
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}{target} is a folder, not a regular file; give the {what} itself")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise InputError(f"{path}{target} is {kind}, not a regular file; give the {what} as a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {what} {path} (permission denied); make it readable")
    return path
