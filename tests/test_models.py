"""The EfficientNet-Lite port, checked on real photos in every variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference import LiteRTRunner, Runner, Variant, classify, get_spec
from inference.core.specs import TFLITE_VARIANTS
from tests.conftest import CAT_CLASSES, COFFEE_CLASSES, LITE_MODELS, RunnerPool

# Float variants compute the same function as the Keras model up to rounding.
FLOAT_PROBABILITY_TOLERANCE = 2e-3
# fp16 weights and int8 arithmetic move probabilities further, but not the answer.
QUANTIZED_PROBABILITY_TOLERANCE = 0.15
# Published in the tensorflow/tpu efficientnet/lite README: parameters (millions) and the
# input resolution each model was trained at.
PUBLISHED = {
    "efficientnet_lite0": (4.7, 224),
    "efficientnet_lite1": (5.4, 240),
    "efficientnet_lite2": (6.1, 260),
}

pytestmark = pytest.mark.slow


def _runner(runners: RunnerPool, model: str, variant: Variant) -> Runner:
    """This module checks every variant of each model: they are converted in one run."""
    runners.convert(model, TFLITE_VARIANTS)
    return runners.get(model, variant)


# The Keras original runs for Lite0 only: Lite1's and Lite2's are the same port (checked
# through their fp32 files, built from the very same Keras models) and cost 14 s each to load.
CAT_CASES = [
    (model, variant)
    for model in LITE_MODELS
    for variant in Variant
    if variant is not Variant.ORIGINAL or model == "efficientnet_lite0"
]


@pytest.mark.parametrize(("model", "variant"), CAT_CASES)
def test_cat_photo_gives_a_cat_class_in_top_3(
    runners: RunnerPool, chelsea: Path, model: str, variant: Variant
) -> None:
    prediction = classify(_runner(runners, model, variant), chelsea, k=3)

    labels = [c.label for c in prediction.top_k]
    assert CAT_CLASSES & set(labels), f"{model} {variant}: {labels}"
    assert prediction.top_k[0].label in CAT_CLASSES
    assert prediction.variant is variant and prediction.model == model


# Measured: 4-bit weights flatten Lite1's answer on coffee (consomme 8 %, soup_bowl 8 %,
# espresso below them; fp32 gives espresso 90 %+). The README's variants table says so.
KNOWN_MISSES = {("efficientnet_lite1", Variant.W4)}


COFFEE_CASES = [
    pytest.param(
        model,
        variant,
        marks=pytest.mark.xfail(strict=True, reason="4-bit weights: a measured miss"),
    )
    if (model, variant) in KNOWN_MISSES
    else (model, variant)
    for model, variant in CAT_CASES
]


@pytest.mark.parametrize(("model", "variant"), COFFEE_CASES)
def test_coffee_photo_gives_espresso_or_cup(
    runners: RunnerPool, coffee: Path, model: str, variant: Variant
) -> None:
    prediction = classify(_runner(runners, model, variant), coffee, k=5)

    assert prediction.top_k[0].label in COFFEE_CLASSES, prediction.top_k
    scores = [c.score for c in prediction.top_k]
    assert scores == sorted(scores, reverse=True)
    assert 0.0 < sum(scores) <= 1.0 + 1e-5


@pytest.mark.parametrize("variant", [Variant.FP32, Variant.FP16, Variant.DYNAMIC, Variant.INT8])
def test_variants_agree_with_the_keras_original(
    runners: RunnerPool, chelsea: Path, coffee: Path, variant: Variant
) -> None:
    tolerance = (
        FLOAT_PROBABILITY_TOLERANCE if variant is Variant.FP32 else QUANTIZED_PROBABILITY_TOLERANCE
    )
    for photo in (chelsea, coffee):
        original = classify(_runner(runners, "efficientnet_lite0", Variant.ORIGINAL), photo)
        converted = classify(_runner(runners, "efficientnet_lite0", variant), photo)
        difference = np.abs(original.probabilities - converted.probabilities).max()
        assert difference < tolerance, f"{variant} on {photo.name}: max |dp| = {difference:.4f}"


def test_the_port_matches_the_published_models_and_its_specs() -> None:
    from inference.models.builders import keras_output_kind
    from inference.models.efficientnet_lite import build_efficientnet_lite

    for name, (params_m, resolution) in PUBLISHED.items():
        model = build_efficientnet_lite(name)  # no weights package: random weights
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert abs(trainable / 1e6 - params_m) < 0.1, (name, trainable)
        assert tuple(model.input_shape[1:]) == (resolution, resolution, 3), name
        spec = get_spec(name)  # what the app feeds it and reads from it
        assert spec.preprocessing.input_shape == tuple(model.input_shape[1:]), name
        assert spec.outputs == keras_output_kind(model), name


def test_int8_variant_has_quantized_8_bit_input_and_output(runners: RunnerPool) -> None:
    runner = _runner(runners, "efficientnet_lite0", Variant.INT8)
    assert isinstance(runner, LiteRTRunner)

    assert runner.input_dtype == np.int8 and runner.output_dtype == np.int8
    scale, _ = runner.input_quantization
    # Inputs scaled by (x - 127) / 128 span [-0.99, 1]: one int8 step per pixel value,
    # pixel 0 at the bottom of the range and pixel 255 at the top.
    assert scale == pytest.approx(1 / 128, rel=0.05)
    lowest = runner.quantize_input(np.array([-127 / 128], np.float32))[0]
    highest = runner.quantize_input(np.array([1.0], np.float32))[0]
    assert lowest <= -127 and highest >= 126


def test_variants_shrink_the_file(runners: RunnerPool) -> None:
    sizes = {v: _runner(runners, "efficientnet_lite0", v).size_bytes for v in TFLITE_VARIANTS}

    assert sizes[Variant.FP16] < 0.55 * sizes[Variant.FP32]
    assert sizes[Variant.DYNAMIC] < 0.35 * sizes[Variant.FP32]
    assert sizes[Variant.INT8] < 0.35 * sizes[Variant.FP32]
