"""Build or load the Keras model behind a spec. Importing this module imports TensorFlow.

Reached only for the ``original`` variant, for conversion (in a child
process) and for inspecting a user's Keras file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.errors import InputError, ModelUnavailableError
from inference.specs import ModelSpec, Source
from inference.zoo import keras_weights_path

if TYPE_CHECKING:
    import keras

__all__ = ["build_keras_model", "describe_keras_file", "import_tensorflow"]

# keras.applications constructor per download model.
_APPLICATIONS = {
    "mobilenet_v2": "MobileNetV2",
    "resnet50": "ResNet50",
    "xception": "Xception",
    "efficientnet_b0": "EfficientNetB0",
}


def import_tensorflow() -> Any:
    """Import TensorFlow with its Python-level logging turned down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def build_keras_model(spec: ModelSpec, *, weights: bool = True) -> keras.Model:
    """Return the Keras model for ``spec``, outputs being class probabilities.

    Args:
        spec: A zoo or custom spec.
        weights: ``False`` builds the architecture with random weights (tests,
            and trying a download model offline).

    Raises:
        ModelUnavailableError: A download model's weights cannot be fetched.
        InputError: A custom file is unsafe or unreadable.
    """
    import_tensorflow()
    if spec.source is Source.BUNDLED:
        if spec.name == "fashion_mnist_cnn":
            from inference import fashion_mnist

            return fashion_mnist.load_trained_model() if weights else fashion_mnist.build_model()
        from inference.efficientnet_lite import build_efficientnet_lite

        return build_efficientnet_lite(spec.name, weights=weights)
    if spec.source is Source.DOWNLOAD:
        return _build_application(spec, weights=weights)
    if spec.path is None:
        raise InputError(f"{spec.title}: a custom model needs a file path")
    return load_keras_file(spec.path)


def _build_application(spec: ModelSpec, *, weights: bool) -> keras.Model:
    import keras

    constructor = getattr(keras.applications, _APPLICATIONS[spec.name])
    height, width = spec.input_size
    cached = keras_weights_path(spec)
    try:
        return constructor(weights="imagenet" if weights else None, input_shape=(height, width, 3))
    except Exception as exc:  # keras raises a bare Exception for URL failures
        if weights and not (cached and cached.is_file()) and _is_network_error(exc):
            raise ModelUnavailableError(
                f"{spec.name} needs its ImageNet weights from the internet (keras.applications "
                f"download of {spec.weights_file}) and this machine cannot reach it; use an "
                "offline model such as efficientnet_lite0, or put the file in "
                f"{cached.parent if cached else '~/.keras/models'}"
            ) from None
        raise


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
    import keras

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


def describe_keras_file(path: Path) -> dict[str, object]:
    """Input shape, output count and parameter count of a Keras image classifier.

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
        "outputs": int(output_shape[1]),
        "parameters": int(model.count_params()),
    }
