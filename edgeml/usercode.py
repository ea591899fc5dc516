"""Importing the user's own code (model classes, calibration functions) as ``python`` run from here would."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def cwd_importable():
    """Let user code in the current folder be imported while loading, as ``python`` itself would."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
