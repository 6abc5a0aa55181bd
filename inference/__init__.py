"""Image classification with a Keras model and its quantized TFLite variants.

UI-free: the Streamlit app and the command line (``python -m inference``) are
both built on this package. Importing it, and running a ``.tflite`` variant,
does not import TensorFlow; only the ``original`` variant and conversion do.

    >>> from inference import get_spec, load_runner, classify
    >>> runner = load_runner(get_spec("efficientnet_lite0"), "int8")
    >>> classify(runner, "cat.jpg").top_k[0].label
    'tabby'
"""

from __future__ import annotations

from inference.core.errors import (
    ConversionError,
    InferenceError,
    InputError,
    ModelUnavailableError,
    UsageError,
)
from inference.core.specs import (
    Category,
    ModelSpec,
    Prediction,
    Preprocessing,
    Source,
    Timing,
    Variant,
    Weights,
    parse_variants,
)
from inference.engine.runners import KerasRunner, LiteRTRunner, Runner, top_k
from inference.formats.images import decode_image, prepare_image, preprocess
from inference.pipeline import classify, classify_decoded
from inference.registry.loading import load_runner, load_runners
from inference.registry.user_models import custom_spec
from inference.registry.zoo import DEFAULT_MODEL, ZOO, get_spec, is_available

__all__ = [
    "DEFAULT_MODEL",
    "ZOO",
    "Category",
    "ConversionError",
    "InferenceError",
    "InputError",
    "KerasRunner",
    "LiteRTRunner",
    "ModelSpec",
    "ModelUnavailableError",
    "Prediction",
    "Preprocessing",
    "Runner",
    "Source",
    "Timing",
    "UsageError",
    "Variant",
    "Weights",
    "classify",
    "classify_decoded",
    "custom_spec",
    "decode_image",
    "get_spec",
    "is_available",
    "load_runner",
    "load_runners",
    "parse_variants",
    "prepare_image",
    "preprocess",
    "top_k",
]
