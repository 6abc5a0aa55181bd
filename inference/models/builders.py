"""Build the Keras model behind a spec: one builder per kind of model, chosen by ``spec.builder``.

A spec names its builder and the builder's argument (``spec.architecture``),
and says where its weights come from (``spec.weights``); adding a model to the
zoo touches only the zoo's table, and no code compares model names.

TensorFlow and Keras are imported inside the functions that need them, so
importing this module (and the zoo, which refers to it) costs nothing on the
TFLite path. Reached for the ``original`` variant, for conversion (in a child
process) and for checking a user's Keras file (in a child process).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.core.errors import InputError, ModelUnavailableError
from inference.core.paths import keras_home
from inference.core.specs import ModelSpec, OutputKind
from inference.models import efficientnet_lite, fashion_mnist

if TYPE_CHECKING:
    import keras

__all__ = [
    "BUILDERS",
    "build_keras_model",
    "describe_keras_file",
    "import_tensorflow",
    "keras_weights_path",
    "load_keras_file",
]


def import_tensorflow() -> Any:
    """Import TensorFlow with its Python-level logging turned down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: PLC0415 - TensorFlow is lazy: the TFLite path never loads it

    return tf


def keras_weights_path(spec: ModelSpec) -> Path | None:
    """Where Keras keeps the downloaded weights of a ``keras.applications`` model."""
    if spec.weights.download is None:
        return None
    return keras_home() / "models" / spec.weights.download


def _efficientnet_lite(spec: ModelSpec, weights: bool) -> keras.Model:
    return efficientnet_lite.build_efficientnet_lite(
        spec.architecture, weights_package=spec.weights.package if weights else None
    )


def _fashion_mnist(spec: ModelSpec, weights: bool) -> keras.Model:
    if weights and spec.weights.file is not None:
        return fashion_mnist.load_trained_model(spec.weights.file)
    return fashion_mnist.build_model()


def _keras_application(spec: ModelSpec, weights: bool) -> keras.Model:
    import keras  # noqa: PLC0415 - Keras is lazy: the TFLite path never loads it

    constructor = getattr(keras.applications, spec.architecture)
    height, width = spec.input_size
    cached = keras_weights_path(spec)
    try:
        return constructor(weights="imagenet" if weights else None, input_shape=(height, width, 3))
    except Exception as exc:  # keras raises a bare Exception for URL failures
        if weights and not (cached and cached.is_file()) and _is_network_error(exc):
            raise ModelUnavailableError(
                f"{spec.name} needs its ImageNet weights from the internet (keras.applications "
                f"download of {spec.weights.download}) and this machine cannot reach it; use an "
                "offline model such as efficientnet_lite0, or put the file in "
                f"{cached.parent if cached else '~/.keras/models'}"
            ) from None
        raise


def _keras_file(spec: ModelSpec, weights: bool) -> keras.Model:
    if spec.weights.file is None:
        raise InputError(f"{spec.title}: a custom model needs a file path")
    return load_keras_file(spec.weights.file)


BUILDERS: dict[str, Callable[[ModelSpec, bool], keras.Model]] = {
    "efficientnet_lite": _efficientnet_lite,
    "fashion_mnist_cnn": _fashion_mnist,
    "keras_application": _keras_application,
    "keras_file": _keras_file,
}
"""Builder name (``ModelSpec.builder``) -> function(spec, weights) returning the Keras model."""


def build_keras_model(spec: ModelSpec, *, weights: bool = True) -> keras.Model:
    """Return the Keras model for ``spec``.

    Args:
        spec: A zoo or custom spec.
        weights: ``False`` builds the architecture with random weights (tests,
            and trying a download model offline).

    Raises:
        ModelUnavailableError: A download model's weights cannot be fetched.
        InputError: The spec has no Keras model, or a custom file is unsafe or unreadable.
    """
    build = BUILDERS.get(spec.builder)
    if build is None:
        raise InputError(f"{spec.title} has no Keras model (builder {spec.builder!r})")
    import_tensorflow()
    return build(spec, weights)


def _is_network_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    markers = ("URL fetch failure", "urlopen", "Name or service", "Temporary failure", "Network")
    return isinstance(exc, OSError) or any(m in text for m in markers)


def load_keras_file(path: Path) -> keras.Model:
    """Load a user's ``.keras``/``.h5`` model with ``safe_mode=True``, for inference only.

    Raises:
        InputError: The file holds code (Lambda layers, custom objects) or is
            not a readable Keras model.
    """
    import_tensorflow()
    import keras  # noqa: PLC0415 - Keras is lazy: the TFLite path never loads it

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types; the user needs one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            message = "it contains a Lambda layer or other code, which is never deserialised"
        elif isinstance(exc, MemoryError) or "OOM" in str(exc):
            message = "its layers declare more weights than fit in memory"
        elif "Could not locate" in str(exc) or "Unknown layer" in str(exc):
            message = "it uses custom layers or objects, which are refused (built-in layers only)"
        raise InputError(f"{path.name}: cannot load this Keras model: {message}") from None


def keras_output_kind(model: keras.Model) -> OutputKind:
    """``probabilities`` when the model's last layer is a softmax (a layer or an activation)."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "")
    if type(last).__name__ == "Softmax" or name == "softmax":
        return "probabilities"
    return "logits"


def describe_keras_file(path: Path) -> dict[str, object]:
    """Input shape, output count, output kind and parameter count of a Keras image classifier.

    Loads the model in this process: the app calls it in a child (``inspect_worker``).

    Raises:
        InputError: The model is unsafe or unreadable, or does not map one
            image to one vector of class scores.
    """
    model = load_keras_file(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(f"{path.name}: expected one image input and one output")
    input_shape = tuple(model.inputs[0].shape)
    output_shape = tuple(model.outputs[0].shape)
    if len(input_shape) != 4 or len(output_shape) != 2:
        raise InputError(
            f"{path.name}: expected input (batch, height, width, channels) and output "
            f"(batch, classes); received {input_shape} and {output_shape}"
        )
    height, width, channels = (int(d) if d else 224 for d in input_shape[1:])
    return {
        "input_shape": [height, width, channels],
        "classes": int(output_shape[1]),
        "outputs": keras_output_kind(model),
        "parameters": int(model.count_params()),
    }
