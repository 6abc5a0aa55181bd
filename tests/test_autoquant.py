"""Keep layers in float: a deliberately broken layer stands out, and the accuracy-bounded search."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from inference import ZOO, Variant, custom_spec
from inference.analysis.evaluate import scan_folder
from inference.analysis.search import allowed_images, labelled_inputs
from inference.engine.runners import LiteRTRunner
from inference.formats.recipes import builtin_recipe
from tests.conftest import RunnerPool, run_cli

pytestmark = pytest.mark.slow

FASHION = ZOO["fashion_mnist_cnn"]
BROKEN_TENSOR = "b2c1_relu"
"""The third convolution of the Fashion-MNIST CNN (op #3): the broken file coarsens it."""
THRESHOLD_DB = 20.0


@pytest.fixture(scope="module")
def fashion_files(
    runners: RunnerPool, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Path]:
    """A float file, and an int8 version with one broken layer made by ai-edge-quantizer's own
    API (not this app's pipeline), as someone would bring them; plus the labels file."""
    from ai_edge_quantizer import calibrator, quantizer, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    folder = tmp_path_factory.mktemp("elsewhere")
    float_file = folder / "float.tflite"
    float_file.write_bytes(runners.path("fashion_mnist_cnn", Variant.FP32).read_bytes())
    broken_rule = {
        "regex": BROKEN_TENSOR,
        "operation": "*",
        "algorithm_key": "min_max_uniform_quantize",
        "op_config": {
            "weight_tensor_config": {
                "num_bits": 4, "symmetric": True, "granularity": "TENSORWISE", "dtype": "INT",
            },
            "compute_precision": "FLOAT",
            "explicit_dequantize": True,
        },
    }  # fmt: skip
    recipe = [*builtin_recipe(Variant.INT8).rules, broken_rule]
    (folder / "broken_recipe.json").write_text(json.dumps(recipe))
    inputs, _ = labelled_inputs(FASHION, scan_folder(FASHION.labelled_sample, FASHION.labels))
    # Overall min/max ranges: with the quantizer's default (averaged) ranges the logits
    # clip as well (7.5 % of values, 16.6 dB), a second, unrelated damage.
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calibrate = calibrator.Calibrator(
        float_file.read_bytes(), num_threads=2, qsv_update_func=qsv_utils.min_max_update
    )
    calibrate.calibrate({"serving_default": [{"image": x[None]} for x in inputs[:50]]}, manager)
    qt = quantizer.Quantizer(str(float_file), recipe)
    calibration = calibrate.get_model_qsvs()
    broken = folder / "broken.tflite"
    qt.quantize(calibration, enable_progress_report=False).export_model(str(broken))
    labels = folder / "labels.txt"
    labels.write_text("\n".join(FASHION.labels) + "\n")
    return float_file, broken, labels


def _agreement(reference: Path, candidate: Path, labels: Path) -> float:
    inputs, _ = labelled_inputs(FASHION, scan_folder(FASHION.labelled_sample, FASHION.labels))
    ref_spec = custom_spec(reference, labels, normalize="unit")
    cand_spec = custom_spec(candidate, labels, normalize="unit")
    ref = LiteRTRunner(ref_spec, Variant.FP32, reference).predict(inputs).argmax(axis=1)
    cand = LiteRTRunner(cand_spec, cand_spec.variants[0], candidate).predict(inputs)
    return float(np.mean(cand.argmax(axis=1) == ref))


def test_a_deliberately_broken_layer_is_the_worst_and_the_first(
    fashion_files: tuple[Path, Path, Path],
) -> None:
    float_file, broken, _ = fashion_files
    samples = sorted((FASHION.labelled_sample / "bag").glob("*.png"))[:4]

    result = run_cli("layers", *map(str, samples), "--reference", str(float_file),
                     "--candidate", str(broken), "--normalize", "unit", "--json")  # fmt: skip

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    worst = min(rows, key=lambda r: r["snr_db"])
    first = next(r for r in rows if r["snr_db"] < THRESHOLD_DB)
    assert BROKEN_TENSOR in worst["tensor"] and BROKEN_TENSOR in first["tensor"]
    before = [r["snr_db"] for r in rows if r["index"] < first["index"]]
    assert min(before) > THRESHOLD_DB + 5  # the layers before it are clearly fine


def test_keeping_the_flagged_layer_in_float_restores_agreement(
    fashion_files: tuple[Path, Path, Path],
) -> None:
    float_file, broken, labels = fashion_files

    result = run_cli("quantize", "--model", str(float_file), "--labels", str(labels),
                     "--normalize", "unit", "--recipe", str(broken.with_name("broken_recipe.json")),
                     "--keep-float", BROKEN_TENSOR, "--json")  # fmt: skip

    assert result.returncode == 0, result.stderr
    fixed = Path(json.loads(result.stdout)["path"])
    broken_agreement = _agreement(float_file, broken, labels)
    fixed_agreement = _agreement(float_file, fixed, labels)
    assert broken_agreement < 0.995  # 200 images: the broken layer flips some
    assert fixed_agreement > broken_agreement


def test_autoquant_keeps_to_its_budget_checked_by_evaluate(
    runners: RunnerPool, tmp_path: Path
) -> None:
    runners.convert("fashion_mnist_cnn", [Variant.FP32])
    data = str(FASHION.labelled_sample)

    result = run_cli("autoquant", "--model", "fashion_mnist_cnn", "--data", data,
                     "--max-drop", "0", "--json")  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    steps = report["steps"]
    assert [s["kept_float"] for s in steps] == sorted(s["kept_float"] for s in steps)
    assert steps[-1]["drop_points"] <= 0 and report["chosen"] == steps[-1]["path"]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(FASHION.labels) + "\n")
    checked = run_cli("evaluate", "--model", report["chosen"], "--labels", str(labels),
                      "--normalize", "unit", "--data", data, "--format", "json")  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    (score,) = json.loads(checked.stdout)["summary"]
    assert score["accuracy"] >= report["float_accuracy"] - report["max_drop"] / 100 - 1e-9


@pytest.mark.parametrize("images", [1, 7, 200, 2000, 9999, 10_000])
@pytest.mark.parametrize("max_drop", ["0", "0.05", "0.1", "0.3", "0.5", "1", "2.5"])
def test_the_budget_is_a_count_of_images_computed_exactly(max_drop: str, images: int) -> None:
    """0.05 points of 2 000 images is exactly one image, whatever binary floats make of it."""
    exact = Fraction(max_drop) * images / 100

    assert allowed_images(float(max_drop), images) == math.floor(exact)
