"""Expected calibration error, reliability and flips by confidence, against other computations."""

from __future__ import annotations

import numpy as np
import pytest

from inference import Variant, get_spec
from inference.analysis.calibration import (
    expected_calibration_error,
    flips_by_confidence,
    reliability,
)
from inference.analysis.evaluate import evaluate, scan_folder
from inference.engine.executors import InProcess
from tests.conftest import RunnerPool


def test_ece_by_hand_on_five_answers() -> None:
    # Bins of width 1/15: 0.95 and 0.99 share (14/15, 1]; 0.55 is in (8/15, 9/15];
    # the two 0.2s share a bin.
    confidence = [0.95, 0.99, 0.55, 0.2, 0.2]
    correct = [True, False, True, False, False]
    # (14/15, 1]: 2 images, accuracy 0.5, confidence 0.97 -> |0.5 - 0.97| = 0.47, weight 2/5
    # (8/15, 9/15]: 1 image, accuracy 1, confidence 0.55 -> 0.45, weight 1/5
    # (2/15, 3/15]: 2 images, accuracy 0, confidence 0.2 -> 0.2, weight 2/5
    expected = 2 / 5 * 0.47 + 1 / 5 * 0.45 + 2 / 5 * 0.2
    assert expected_calibration_error(confidence, correct) == pytest.approx(expected)
    assert [r["images"] for r in reliability(confidence, correct)] == [2, 1, 2]


def _ece_with_digitize(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Another computation: numpy's digitize on right-closed bins, a loop over bin ids."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.digitize(confidence, edges[1:-1], right=True)
    total = 0.0
    for k in np.unique(ids):
        members = ids == k
        total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def test_evaluate_ece_equals_an_independent_computation_on_real_predictions(
    runners: RunnerPool,
) -> None:
    spec = get_spec("fashion_mnist_cnn")
    chosen = {Variant(v): runners.get(spec.name, v) for v in ("fp32", "int8", "w4")}
    report = evaluate(
        spec, chosen, scan_folder(spec.labelled_sample, spec.labels), engine=InProcess()
    )
    for score in report.scores:
        correct = score.top1 == score.truth
        assert score.ece == pytest.approx(
            _ece_with_digitize(score.confidence.astype(np.float64), correct), abs=1e-9
        )
        assert 0.0 <= score.ece < 0.2
    calibration = report.calibration()
    assert set(calibration) == {"fp32", "int8", "w4"}
    assert calibration["fp32"]["flips_by_reference_confidence"] is None
    w4 = calibration["w4"]["flips_by_reference_confidence"]
    assert sum(b["images"] for b in w4) == 200
    flips = int(np.sum(report.scores[2].top1 != report.scores[0].top1))
    assert sum(round(b["flip_rate"] * b["images"]) for b in w4 if b["images"]) == flips


def test_flips_by_confidence_by_hand() -> None:
    rows = flips_by_confidence(
        np.array([0.3, 0.6, 0.95, 0.99]), np.array([1, 2, 3, 4]), np.array([9, 2, 3, 8])
    )
    assert [(r["images"], r["flip_rate"]) for r in rows] == [
        (1, 1.0),
        (1, 0.0),
        (0, None),
        (2, 0.5),
    ]


def test_the_images_a_variant_forgets_are_its_disagreements_surest_first(
    runners: RunnerPool,
) -> None:
    spec = get_spec("fashion_mnist_cnn")
    chosen = {Variant(v): runners.get(spec.name, v) for v in ("fp32", "w4")}
    report = evaluate(
        spec, chosen, scan_folder(spec.labelled_sample, spec.labels), engine=InProcess()
    )
    fp32, w4 = report.scores
    differ = int(np.sum(fp32.top1 != w4.top1))
    forgotten = report.forgotten(Variant.W4)
    assert len(forgotten) == min(differ, 24) and differ > 0
    sure = [item["reference_confidence"] for item in forgotten]
    assert sure == sorted(sure, reverse=True)
    for item in forgotten:
        assert item["reference"] != item["variant"]
        # The file is the one scored: its folder is its true class, and fp32 answers it again.
        assert (
            item["name"].split("/")[0].replace("_", "").lower()
            in item["truth"].replace("-", "").replace("/", "").replace(" ", "").lower()
        )
        again = chosen[Variant.FP32].predict(_input(spec, item["source"]))
        assert spec.labels[int(again.argmax())] == item["reference"]


def _input(spec: object, source: object) -> np.ndarray:
    from inference.formats.images import decode_image, draft_size, preprocess

    image = decode_image(source, color_mode=spec.preprocessing.color_mode,
                         min_size=draft_size(spec.preprocessing))  # fmt: skip
    return preprocess(image, spec.preprocessing)
