"""Damage made, not inherited: each op's own error, carried to the output, and the scan.

Breaks are planted with ai-edge-quantizer's own recipes (one op given weights
the rest of the model does not have); both rankings must put that op first.
The own-error metric is checked against computations done another way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from inference import Variant, get_spec
from inference.analysis.layer_report import compare_layers, snr_db
from inference.analysis.sensitivity import ranking_agreement, sensitivity_scan
from inference.engine.convert import ensure_recipe, float_path
from inference.formats.images import decode_image, preprocess
from inference.formats.op_models import op_models
from inference.formats.recipes import builtin_recipe, parse_recipe
from tests.conftest import REPO_ROOT, RunnerPool, run_cli

pytestmark = pytest.mark.slow

LITE0 = get_spec("efficientnet_lite0")
SAMPLES = ["chelsea.jpg", "coffee.jpg"]
PREFIX = "efficientnet_lite0_1/"
HAND_TOLERANCE_DB = 0.5
"""Our numpy requantization against LiteRT's fixed-point kernel, on the same inputs."""


def _inputs() -> list[np.ndarray]:
    pre = LITE0.preprocessing
    return [
        preprocess(decode_image(REPO_ROOT / "assets" / "samples" / name), pre).astype(np.float32)
        for name in SAMPLES
    ]


def _plant(base: Variant, tensor: str, bits: int, granularity: str, name: str):
    """``base``'s recipe with one op's weights at ``bits`` and ``granularity``: its file."""
    rules = builtin_recipe(base).rules
    broken = json.loads(json.dumps(rules[0]))
    broken["regex"] = "^" + re.escape(PREFIX + tensor)
    broken["op_config"]["weight_tensor_config"].update(num_bits=bits, granularity=granularity)
    recipe = parse_recipe(json.dumps([*rules, broken]), name=name)
    return recipe, ensure_recipe(LITE0, recipe)


@pytest.fixture(scope="module")
def lite0(runners: RunnerPool) -> Path:
    runners.get(LITE0.name, Variant.INT8)  # converts fp32 and the built-in variants once
    return float_path(LITE0)


@pytest.mark.parametrize(
    ("base", "tensor", "bits", "granularity", "op"),
    [
        # 2-bit weights in block 9's projection, the rest dynamic-range int8
        (Variant.DYNAMIC, "blocks.9.bn2_1/", 2, "TENSORWISE", "CONV_2D"),
        # one depthwise conv with one scale for all channels, the rest static int8
        (Variant.INT8, "blocks.2.bn1.relu6_1/", 8, "TENSORWISE", "DEPTHWISE_CONV_2D"),
    ],
    ids=["conv-2bit-dynamic", "depthwise-per-tensor-int8"],
)
def test_a_planted_break_is_first_in_both_rankings(
    lite0: Path, base: Variant, tensor: str, bits: int, granularity: str, op: str
) -> None:
    recipe, broken = _plant(base, tensor, bits, granularity, f"planted-{op.lower()}")
    inputs = _inputs()

    report = compare_layers(lite0, broken, inputs)
    scan = sensitivity_scan(LITE0, lite0, recipe, inputs, workers=2)

    first = report.most_damaging(1)[0]
    assert first.tensor.startswith(PREFIX + tensor) and first.op == op and first.damage_rank == 1
    # Nothing before the break makes damage as bad as its own.
    assert report.damage_starts(first.damage_db + 0.01) == first
    assert scan.records[0].tensor == first.tensor and scan.records[0].rank == 1
    assert ranking_agreement(report, scan)["same_first"] is True
    # The plain-SNR reading points downstream of the break, which is why own error exists.
    assert report.worst(1)[0].index >= first.index


def test_the_first_ops_own_error_is_its_error_in_the_whole_model(lite0: Path) -> None:
    """The first op's input is the image itself: alone or in the model, it sees the same."""
    int8 = ensure_recipe(LITE0, builtin_recipe(Variant.INT8))
    report = compare_layers(lite0, int8, _inputs()[:2])

    first = report.records[0]
    assert first.own_snr_db == pytest.approx(first.snr_db, abs=0.05)  # validator's SNR


def test_an_adds_own_error_matches_a_numpy_requantization(lite0: Path) -> None:
    """Quantize the reference's two inputs with the candidate's scales, add, requantize."""
    int8 = ensure_recipe(LITE0, builtin_recipe(Variant.INT8))
    image = _inputs()[1]
    report = compare_layers(lite0, int8, [image])
    add = next(r for r in report.records if r.op == "ADD")
    cut = next(c for c in op_models(int8.read_bytes()) if c.output == add.tensor)

    ref = Interpreter(
        model_path=str(lite0),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    ref.allocate_tensors()
    ref.set_tensor(ref.get_input_details()[0]["index"], image)
    ref.invoke()
    values = {t["name"]: t["index"] for t in ref.get_tensor_details()}
    cand = {t["name"]: t for t in Interpreter(model_path=str(int8)).get_tensor_details()}

    def quantized(name: str, value: np.ndarray) -> np.ndarray:
        scale, zero = cand[name]["quantization"]
        return (np.clip(np.round(value / scale) + zero, -128, 127) - zero) * scale

    left, right = (np.asarray(ref.get_tensor(values[n]), np.float64) for n in cut.inputs)
    summed = quantized(cut.inputs[0], left) + quantized(cut.inputs[1], right)
    made = quantized(add.tensor, summed)
    truth = np.asarray(ref.get_tensor(values[add.tensor]), np.float64)
    by_hand = snr_db(float(np.sum(truth**2) / np.sum((truth - made) ** 2)))

    assert add.own_snr_db == pytest.approx(by_hand, abs=HAND_TOLERANCE_DB)


def test_a_float_candidate_has_no_own_error(lite0: Path) -> None:
    report = compare_layers(lite0, lite0, _inputs()[:1])

    assert all(r.own_snr_db is not None and r.own_snr_db >= 150 for r in report.records)


def test_the_sensitivity_command_ranks_every_op_and_counts_accuracy(runners: RunnerPool) -> None:
    runners.get("fashion_mnist_cnn", Variant.W4)
    sample = get_spec("fashion_mnist_cnn").labelled_sample

    found = run_cli("sensitivity", "--model", "fashion_mnist_cnn", "--variant", "w4",
                    "--data", str(sample), "--workers", "2", "--json")  # fmt: skip

    assert found.returncode == 0, found.stderr
    scan = json.loads(found.stdout)
    records = scan["records"]
    assert scan["images"] == 200 and scan["workers"] == 2
    assert [r["rank"] for r in records] == list(range(1, len(records) + 1))
    assert set(records[0]) == {
        "index", "tensor", "op", "rank", "output_snr_db", "agreement", "accuracy_drop"
    }  # fmt: skip
    assert [r["output_snr_db"] for r in records] == sorted(r["output_snr_db"] for r in records)
    # The accuracy drop is counted on the 200 images: whole images, 0.5 points each.
    assert all(abs(r["accuracy_drop"] * 2 - round(r["accuracy_drop"] * 2)) < 1e-6 for r in records)
    assert scan["agreement_with_own_error"]["ops"] >= 2
