"""Errors a user can cause or meet, each with the exit code the CLI maps it to.

Every message names the thing at fault (file, input, op, version) and says what to do about it.
"""

from __future__ import annotations

#: Exit codes of the CLI, documented in the README.
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_MISSING_BACKEND = 3
EXIT_INTERNAL = 4


class EdgeMLError(Exception):
    """Base of every expected failure; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_USAGE


class InputError(EdgeMLError):
    """A file, flag or array the user gave cannot be used as it is."""


class UnsafeFormatError(InputError):
    """A pickle-based file was given without the explicit opt-in to run its code."""


class SpecError(InputError):
    """An input spec is malformed, missing, or does not match the data given."""


class ExportError(EdgeMLError):
    """The exporter could not turn the source model into the target format."""


class CheckFailed(EdgeMLError):
    """A converted artifact does not compute what its source computes (a failed gate)."""

    exit_code = EXIT_GATE_FAILED

    def __init__(self, message: str, check=None):
        super().__init__(message)
        self.check = check


class BackendMissing(EdgeMLError):
    """A framework, device or platform the job needs is not available here."""

    exit_code = EXIT_MISSING_BACKEND


def require(module: str, extra: str):
    """Import an optional framework, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendMissing(
            f"{module} is not installed ({exc}); install it with: pip install 'edgeml[{extra}]'"
        ) from exc


def first_line(exc: BaseException, lines: int = 1) -> str:
    """The start of a framework's error message: enough to name the problem on one line."""
    text = [t.strip() for t in str(exc).strip().splitlines() if t.strip()]
    return " ".join(text[:lines]) if text else type(exc).__name__


def no_such_file(path, what: str = "file") -> InputError:
    import os

    return InputError(f"no such {what}: {path}; check the path (relative paths start at {os.getcwd()})")
