"""Exceptions whose message is one line a user can act on, and the policy for showing them.

The CLI prints ``error: <message>`` and the app shows the message in a box;
neither shows a traceback, so every message names what was expected and what
was received. Anything that is not an :class:`InferenceError` is a bug: it is
logged with its traceback for the operator and the user gets one line
(:func:`one_line`, shared by the pages and the REST API).
"""

from __future__ import annotations

import logging

__all__ = [
    "ConversionError",
    "InferenceError",
    "InputError",
    "ModelUnavailableError",
    "NotAllowedError",
    "UsageError",
    "error_type",
    "one_line",
]


class InferenceError(Exception):
    """Base class: a failure the user can understand from its message alone."""


class InputError(InferenceError, ValueError):
    """Something the user gave (image, model file, labels, option) is not usable."""


class UsageError(InputError):
    """An option value the command does not accept (the CLI exits with status 2)."""


class ModelUnavailableError(InferenceError):
    """The model cannot be loaded on this machine (offline, package missing)."""


class ConversionError(InferenceError):
    """Converting a model to a TFLite variant failed or timed out."""


class NotAllowedError(InferenceError):
    """The caller may not load this (the API's anonymous callers and the Keras original)."""


_BY_NAME: dict[str, type[InferenceError]] = {
    cls.__name__: cls
    for cls in (
        InferenceError,
        InputError,
        UsageError,
        ModelUnavailableError,
        ConversionError,
        NotAllowedError,
    )
}


def error_type(name: str) -> type[InferenceError] | None:
    """The error class a child process named in its error event (``None``: not one of ours)."""
    return _BY_NAME.get(name)


def one_line(exc: BaseException, *, context: str, log: logging.Logger) -> str:
    """The message to show for ``exc``: its own for an ``InferenceError``, else logged and generic.

    Args:
        exc: The exception caught at the edge (a page, an API route).
        context: What was being done, for the log and the generic line
            (``"efficientnet_lite0 int8 on cat.jpg"``).
        log: Where a bug's traceback goes.
    """
    if isinstance(exc, InferenceError):
        return str(exc)
    log.error("%s failed", context, exc_info=(type(exc), exc, exc.__traceback__))
    return f"{context}: failed unexpectedly ({type(exc).__name__}); the error was logged."
