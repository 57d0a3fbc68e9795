"""The project's own error types: a problem the user can fix, reported in one line.

Each is also a ValueError (FloatingPointError for a diverged loss) so that callers that
catch the builtin keep working; `user_errors` catches `LangsubError` only, so a bug
anywhere else keeps its traceback.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback


class LangsubError(Exception):
    """Base of every user-facing error: the message names the key, the value, what is allowed."""


class ConfigError(LangsubError, ValueError):
    """One or more bad config values; one line each."""


class CorpusError(LangsubError, ValueError):
    """A corpus file or stream is missing, empty or too small for one block."""


class UnsupportedModelError(LangsubError, ValueError):
    """The model has no gated FFN that langsub can address neuron by neuron."""


class MaskError(LangsubError, ValueError):
    """A neuron mask or statistics file that cannot be read or does not fit the model."""


class CheckpointError(LangsubError, ValueError):
    """A checkpoint or delta that does not fit this run or model."""


class TrainingDiverged(LangsubError, FloatingPointError):
    """A non-finite loss: the last good checkpoint stays."""


USER_ERRORS = (LangsubError,)


# ------------------------------------------------------------------ the one error path
def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def one_line(fn, *args, also: tuple = (), debug: bool = False):
    """`fn(*args)`, with every user error (and the exception types in `also`, e.g. Hydra's
    for a malformed override: their first line) as one line on stderr and exit code 2 —
    the one error path of every command. `debug` or LANGSUB_DEBUG=1: the traceback too."""
    try:
        return fn(*args)
    except (*USER_ERRORS, *also) as e:
        if debug or os.environ.get("LANGSUB_DEBUG"):
            traceback.print_exc()
        text = str(e).strip()
        if not isinstance(e, USER_ERRORS):
            text = text.splitlines()[0] if text else type(e).__name__
        fail(text.replace("\n", "\n       "))


def user_errors(fn):
    """A Hydra task function with `one_line`'s error path (debug_errors=true: the traceback)."""

    @functools.wraps(fn)
    def wrapper(cfg, *a, **kw):
        return one_line(fn, cfg, *a, **kw, debug=bool(cfg.get("debug_errors")))

    return wrapper


class ArgParser(argparse.ArgumentParser):
    """argparse for the commands that take options (export, report, bench): a bad or missing
    option is one line and exit 2, like every other bad input (argparse prints its usage)."""

    def error(self, message: str) -> None:
        fail(f"{self.prog}: {message} (allowed: `{self.prog} --help` lists the options)")
