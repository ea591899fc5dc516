"""Pickle and joblib files: loaded only with the explicit opt-in, because unpickling runs the file's code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError, UnsafeFormatError, first_line, require
from ..usercode import cwd_importable


def refuse_pickle(path: Path, what: str = "a pickle", alternative: str = "or save the model with skops") -> UnsafeFormatError:
    return UnsafeFormatError(
        f"{path} holds {what}: loading it runs any code stored in it, so edgeml refuses it by default; "
        f"pass --trust-pickle (trust_pickle=True) if you made the file or trust its origin, {alternative}"
    )


def load_pickle(path: Path, trust_pickle: bool) -> Any:
    if not trust_pickle:
        raise refuse_pickle(path)
    joblib = require("joblib", "sklearn")  # also reads plain pickles
    try:
        with cwd_importable():  # the classes it holds may live beside it, as in the user's training script
            return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - unpickling fails in many ways, all of them the file's
        raise InputError(
            f"{path} could not be unpickled ({type(exc).__name__}: {first_line(exc)}); "
            "run edgeml where the classes it holds can be imported"
        ) from exc
