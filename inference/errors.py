"""Exceptions whose message is one line a user can act on.

The CLI prints ``error: <message>`` and the app shows the message in a box;
neither shows a traceback, so every message names what was expected and what
was received.
"""

from __future__ import annotations

__all__ = ["ConversionError", "InferenceError", "InputError", "ModelUnavailableError"]


class InferenceError(Exception):
    """Base class: a failure the user can understand from its message alone."""


class InputError(InferenceError, ValueError):
    """Something the user gave (image, model file, labels, option) is not usable."""


class ModelUnavailableError(InferenceError):
    """The model cannot be loaded on this machine (offline, package missing)."""


class ConversionError(InferenceError):
    """Converting a model to a TFLite variant failed or timed out."""
