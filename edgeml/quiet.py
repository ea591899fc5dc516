"""Silencing frameworks that print for their own developers (progress bars, warnings, C++ graph dumps).

edgeml reports what matters in its own words; the frameworks' chatter would bury it in a CI log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings

#: Loggers of the frameworks edgeml drives.
LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch", "transformers", "coremltools", "root")


@contextlib.contextmanager
def quiet():
    """The exporters print progress, warnings and graph dumps meant for their own developers (some from C++,
    straight to file descriptors 1 and 2); edgeml reports what matters in its own words instead."""
    loggers = [logging.getLogger(None if n == "root" else n) for n in LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
