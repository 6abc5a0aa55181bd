"""Corruptions against other computations, and the robustness run on real Fashion-MNIST images."""

from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference import Variant, get_spec
from inference.analysis.evaluate import scan_folder
from inference.analysis.robustness import robustness
from inference.core.errors import UsageError
from inference.core.paths import ASSETS_DIR
from inference.engine.executors import InProcess, LocalPool
from inference.engine.shards import prepare
from inference.formats.corruptions import CORRUPTIONS, corrupt, parse_corruptions
from tests.conftest import RunnerPool, assert_one_error_line, run_cli

PHOTO = ASSETS_DIR / "samples" / "chelsea.jpg"
SAMPLE = str(ASSETS_DIR / "fashion_mnist_sample")
# Noise statistics on 150 528 values: a relative error of 2 % is over ten standard errors.
STATISTICAL_TOLERANCE = 0.02
# Gaussian noise at severity 5 (sigma 0.38 of the range) leaves the CNN near chance; on the
# clean images it is right about 9 times in 10. Half of that is the least it must lose.
MIN_NOISE_COST = 0.45


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    with Image.open(PHOTO) as image:
        return np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_keeps_shape_is_repeatable_and_grows_with_severity(
    name: str, photo: np.ndarray
) -> None:
    gray = photo.mean(axis=-1, keepdims=True).astype(np.uint8)
    small = np.asarray(Image.fromarray(gray[..., 0]).resize((28, 28)))[..., None]
    for pixels in (photo, gray, small):
        mild, harsh = (corrupt(pixels, name, s, key="cat.jpg") for s in (1, 5))
        assert mild.shape == pixels.shape and mild.dtype == np.uint8
        assert np.array_equal(mild, corrupt(pixels, name, 1, key="cat.jpg"))  # same image, same
        change = [np.abs(x.astype(int) - pixels).mean() for x in (mild, harsh)]
        assert change[1] > change[0] > 0 or (name == "defocus_blur" and change[1] > 0)


def test_noise_has_imagenet_c_spread_on_a_flat_gray_picture() -> None:
    gray = np.full((224, 224, 3), 128, np.uint8)
    gaussian = corrupt(gray, "gaussian_noise", 1, key="a").astype(float) - 128
    assert np.std(gaussian) == pytest.approx(0.08 * 255, rel=STATISTICAL_TOLERANCE)
    # Poisson(x c) / c at x = 128/255, c = 60: variance x / c of the unit range.
    shot = corrupt(gray, "shot_noise", 1, key="a").astype(float) / 255
    assert np.std(shot) == pytest.approx(math.sqrt(128 / 255 / 60), rel=STATISTICAL_TOLERANCE)
    # Salt and pepper: a share c = 0.27 of values goes to 0 or 255, half each.
    impulse = corrupt(gray, "impulse_noise", 5, key="a")
    assert np.mean(impulse == 0) == pytest.approx(0.135, rel=0.05)
    assert np.mean(impulse == 255) == pytest.approx(0.135, rel=0.05)
    assert not np.array_equal(gaussian, corrupt(gray, "gaussian_noise", 1, key="b") - 128.0)


def test_brightness_equals_the_standard_librarys_hsv_round_trip(photo: np.ndarray) -> None:
    pixels = photo[::16, ::16]
    out = corrupt(pixels, "brightness", 3, key="")
    for rgb, got in zip(pixels.reshape(-1, 3), out.reshape(-1, 3), strict=True):
        h, s, v = colorsys.rgb_to_hsv(*(rgb / 255.0))
        expected = np.array(colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0))) * 255
        assert np.abs(got - expected).max() <= 0.5 + 1e-9


def test_contrast_by_hand() -> None:
    pixels = np.array([[[0], [255]]], np.uint8)  # mean 0.5; (x - 0.5) * 0.4 + 0.5
    assert corrupt(pixels, "contrast", 1).ravel().tolist() == [round(0.3 * 255), round(0.7 * 255)]


def test_defocus_spreads_a_point_into_a_disk_and_motion_into_a_line() -> None:
    dot = np.zeros((224, 224, 1), np.uint8)
    dot[112, 112] = 255
    disk = corrupt(dot, "defocus_blur", 5, key="").astype(float)[..., 0]
    lit = np.argwhere(disk > 0)
    radius = np.hypot(*(lit - 112).T).max()
    assert 9 <= radius <= 12  # ImageNet-C's radius 10 at 224 pixels, edge softened
    assert np.abs(disk - disk[::-1, ::-1]).max() <= 1  # round: symmetric (up to rounding)
    line = corrupt(dot, "motion_blur", 5, key="").astype(float)[..., 0]
    lit = np.argwhere(line > 0) - 112
    assert len(lit) >= 10
    # Within 45 degrees of horizontal, one-sided as ImageMagick's: each pixel gathers from
    # +ceil(i cos - 1/2) columns away, so a point lands at or left of itself.
    assert (np.abs(lit[:, 0]) <= np.abs(lit[:, 1]) + 1).all()
    assert (lit[:, 1] <= 0).all() and lit[:, 1].min() <= -10


def test_nearest_resize_makes_no_new_colours_and_bilinear_does(photo: np.ndarray) -> None:
    colours = {tuple(p) for p in photo.reshape(-1, 3)}
    nearest = corrupt(photo, "resize_nearest", 5)
    bilinear = corrupt(photo, "resize_bilinear", 5)
    assert {tuple(p) for p in nearest.reshape(-1, 3)} <= colours
    assert not {tuple(p) for p in bilinear.reshape(-1, 3)} <= colours


def test_conditions_parse_and_bad_ones_say_what_is_expected() -> None:
    conditions = parse_corruptions("gaussian_noise,contrast", "5,1")
    assert [(c.name, c.severity) for c in conditions] == [
        ("clean", 0),
        ("gaussian_noise", 1),
        ("gaussian_noise", 5),
        ("contrast", 1),
        ("contrast", 5),
    ]
    assert len(parse_corruptions(None, None)) == 1 + 5 * len(CORRUPTIONS)
    with pytest.raises(UsageError, match="Expected a corruption among"):
        parse_corruptions("fog", "1")
    with pytest.raises(UsageError, match="Expected a severity from 1 to 5"):
        parse_corruptions("contrast", "6")


@pytest.fixture(scope="module")
def fashion_noise(runners: RunnerPool):
    spec = get_spec("fashion_mnist_cnn")
    chosen = {Variant(v): runners.get(spec.name, v) for v in ("fp32", "int8", "w4")}
    dataset = scan_folder(spec.labelled_sample, spec.labels)
    conditions = parse_corruptions("gaussian_noise,resize_nearest", "1,5")
    streamed: list[list] = []
    report = robustness(
        spec, chosen, dataset, conditions, engine=InProcess(), on_records=streamed.append
    )
    return spec, chosen, dataset, conditions, report, streamed


def test_gaussian_noise_at_severity_5_costs_fp32_accuracy_on_fashion_mnist(fashion_noise) -> None:
    *_, report, streamed = fashion_noise
    accuracy = {(r.variant, r.corruption, r.severity): r.accuracy for r in report.records}
    clean = accuracy["fp32", "clean", 0]
    assert clean > 0.85
    assert accuracy["fp32", "gaussian_noise", 5] < clean - MIN_NOISE_COST
    assert accuracy["fp32", "gaussian_noise", 5] < accuracy["fp32", "gaussian_noise", 1]
    # One batch of records per condition, streamed as each finished: 5 conditions x 3 variants.
    assert [len(batch) for batch in streamed] == [3] * 5
    assert all(r.images == 200 for r in report.records)


def test_mce_is_summed_error_over_the_baselines_by_hand(fashion_noise) -> None:
    *_, report, _ = fashion_noise
    error = {(r.variant, r.corruption, r.severity): 1 - r.accuracy for r in report.records}
    mce = report.mce()
    assert report.baseline == "fp32"
    assert mce["fp32"]["mce"] == pytest.approx(1.0)
    expected = np.mean(
        [
            (error["w4", c, 1] + error["w4", c, 5]) / (error["fp32", c, 1] + error["fp32", c, 5])
            for c in ("gaussian_noise", "resize_nearest")
        ]
    )
    assert mce["w4"]["mce"] == pytest.approx(expected)
    relative = (error["int8", "gaussian_noise", 1] + error["int8", "gaussian_noise", 5]
                - 2 * error["int8", "clean", 0]) / (
        error["fp32", "gaussian_noise", 1] + error["fp32", "gaussian_noise", 5]
        - 2 * error["fp32", "clean", 0])  # fmt: skip
    assert mce["int8"]["relative_ce"]["gaussian_noise"] == pytest.approx(relative)


def test_agreement_is_the_share_of_same_top1_as_fp32_on_the_same_noisy_images(
    fashion_noise,
) -> None:
    spec, chosen, dataset, _, report, _ = fashion_noise
    # Another computation: the same noisy images prepared at once, through both runners.
    noisy = parse_corruptions("gaussian_noise", "5")[1]
    records = [r for r in dataset.records() if not isinstance(r, str)]
    inputs = prepare(records, spec, corruption=noisy).inputs
    top1 = {v.value: chosen[v].predict(inputs).argmax(axis=1) for v in chosen}
    assert len(inputs) == 200
    record = next(
        r
        for r in report.records
        if (r.variant, r.corruption, r.severity) == ("w4", "gaussian_noise", 5)
    )
    assert record.agreement == pytest.approx(np.mean(top1["w4"] == top1["fp32"]))


@pytest.mark.slow
def test_local_workers_give_the_in_process_records(fashion_noise) -> None:
    spec, chosen, dataset, conditions, report, _ = fashion_noise
    files_only = {v: r for v, r in chosen.items()}
    with LocalPool(2) as pool:
        pooled = robustness(spec, files_only, dataset, conditions[:3], engine=pool)
    assert pooled.engine == "running on 2 local worker processes"
    mine = [r.as_dict() for r in report.records[: len(pooled.records)]]
    assert [r.as_dict() for r in pooled.records] == mine


def test_robustness_command_json_and_a_bad_corruption(runners: RunnerPool) -> None:
    runners.convert("fashion_mnist_cnn", [Variant.FP32, Variant.INT8])
    result = run_cli(
        "robustness", "--model", "fashion_mnist_cnn", "--data", SAMPLE,
        "--variants", "fp32,int8", "--corruptions", "contrast", "--severities", "5",
        "--workers", "0", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    keys = {(r["variant"], r["corruption"], r["severity"]) for r in document["records"]}
    assert keys == {(v, c, s) for v in ("fp32", "int8") for c, s in (("clean", 0), ("contrast", 5))}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in document["records"])
    assert document["baseline"] == "fp32" and document["mce"]["fp32"]["mce"] == 1.0
    bad = run_cli(
        "robustness", "--model", "fashion_mnist_cnn", "--data", SAMPLE,
        "--corruptions", "fog",
    )  # fmt: skip
    assert_one_error_line(bad, 2, "Expected a corruption among")


def test_a_ray_batch_mixing_conditions_keeps_each_rows_own_corruption() -> None:
    """The cluster's stages without a cluster: one batch, the same images clean and noisy."""
    import pickle

    from inference.engine.ray_engine import _prepare, _results

    spec = get_spec("fashion_mnist_cnn")
    records = [r for r in scan_folder(spec.labelled_sample, spec.labels).records()][:3]
    noisy = parse_corruptions("gaussian_noise", "5")[1]
    rows = [(r, c) for c in (None, noisy) for r in records]
    batch = {
        "shard": np.array([r.shard for r, _ in rows]),
        "offset": np.array([r.offset for r, _ in rows]),
        "name": np.array([r.name for r, _ in rows], dtype=object),
        "label": np.array([r.label for r, _ in rows]),
        "data": np.array([Path(r.data).read_bytes() for r, _ in rows], dtype=object),
        "problem": np.array([""] * len(rows), dtype=object),
        "corruption": np.array([pickle.dumps(c) if c else b"" for _, c in rows], dtype=object),
    }
    prepared = _prepare(batch, spec)
    clean = prepare(records, spec, pixels=True).inputs
    corrupted = prepare(records, spec, pixels=True, corruption=noisy).inputs
    assert np.array_equal(prepared["input"][:3], clean)
    assert np.array_equal(prepared["input"][3:], corrupted)
    assert not np.array_equal(clean, corrupted)

    answered = {
        **{k: prepared[k] for k in ("shard", "offset", "label", "corruption", "problem")},
        "decode_s": prepared["decode_s"],
        "preprocess_s": prepared["preprocess_s"],
        "top fp32": np.arange(6 * 5, dtype=np.int16).reshape(6, 5),
        "confidence fp32": np.linspace(0.5, 1.0, 6, dtype=np.float32),
        "inference fp32": np.full(6, 0.001),
        "node": np.array(["a", "a", "b", "a", "b", "b"], dtype=object),
        "tensorflow": np.zeros(6, bool),
    }
    results = list(_results(answered, ["fp32"]))
    # One result per (node, condition): a-clean, b-clean, a-noisy, b-noisy; no row lost.
    assert [(r.node, r.corruption) for r in results] == [
        ("a", None),
        ("b", None),
        ("a", noisy),
        ("b", noisy),
    ]
    assert sorted(int(t[0]) for r in results for t in r.top["fp32"]) == list(range(0, 30, 5))
    assert [r.offsets.tolist() for r in results] == [
        [records[0].offset, records[1].offset],
        [records[2].offset],
        [records[0].offset],
        [records[1].offset, records[2].offset],
    ]
