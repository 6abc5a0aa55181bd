"""The Fashion-MNIST CNN: its classes, architecture and shipped weights.

VGG-style blocks of two 3x3 convolutions with batch norm and max-pooling, a
dense head with dropout, as in the CIFAR-10 write-up this product grew from.
Its weights (about 2 MB) ship in ``assets/``; ``training/fashion_mnist.py``
trains them and exports the data set as labelled folders.

Keras is imported inside the functions, so the zoo can name this model's
classes without loading TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from inference.core.paths import ASSETS_DIR

if TYPE_CHECKING:
    import keras

__all__ = ["CLASSES", "INPUT_SHAPE", "WEIGHTS_PATH", "build_model", "load_trained_model"]

WEIGHTS_PATH = ASSETS_DIR / "fashion_mnist_cnn.weights.h5"
INPUT_SHAPE = (28, 28, 1)
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def build_model() -> keras.Model:
    """The VGG-style CNN: two blocks of two 3x3 convs + batch norm + max-pool, dense head."""
    import keras  # noqa: PLC0415 - Keras is lazy: the TFLite path never loads it

    layers = keras.layers
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = inputs
    for block, filters in enumerate((32, 64), start=1):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"b{block}c{conv}")(
                x
            )
            x = layers.BatchNormalization(name=f"b{block}c{conv}_bn")(x)
            x = layers.ReLU(name=f"b{block}c{conv}_relu")(x)
        x = layers.MaxPooling2D(name=f"b{block}_pool")(x)
        x = layers.Dropout(0.1, name=f"b{block}_drop")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc")(x)
    x = layers.Dropout(0.3, name="fc_drop")(x)
    outputs = layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fashion_mnist_cnn")


def load_trained_model(weights: Path = WEIGHTS_PATH) -> keras.Model:
    """The CNN with trained weights (by default the shipped ones)."""
    model = build_model()
    model.load_weights(weights)
    return model
