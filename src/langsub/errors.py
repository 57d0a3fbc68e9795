"""The project's own error types: a problem the user can fix, reported in one line.

Each is also a ValueError (FloatingPointError for a diverged loss) so that callers that
catch the builtin keep working; `cli.user_errors` catches `LangsubError` only, so a bug
anywhere else keeps its traceback.
"""
from __future__ import annotations


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
