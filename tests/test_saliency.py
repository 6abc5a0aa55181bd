"""Saliency maps: where each variant looks, checked against oracles from outside the code.

The real model on a real photo whose object fills one side must look at that side
(both sides, so a map biased to one of them fails); occlusion on a tiny model is
compared with a brute-force loop written here; the IoU of top regions is counted by
hand. Tests that load Lite0 are slow (the ``runners`` fixture marks them).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from inference.analysis.saliency import (
    SaliencyMap,
    SaliencyOptions,
    difference,
    explain,
    overlay,
    pairs,
    top_region_iou,
)
from inference.cli import main
from inference.core.specs import Category, ModelSpec, Preprocessing, Source, Variant
from inference.engine.runners import Runner, top_k
from inference.formats.images import preprocess
from inference.registry.zoo import get_spec
from tests.conftest import CAT_CLASSES, REPO_ROOT, RunnerPool, assert_one_error_line

LITE0 = "efficientnet_lite0"
CHELSEA = REPO_ROOT / "assets" / "samples" / "chelsea.jpg"
CAT_BOX = (40, 0, 340, 300)
"""The cat's face in chelsea.jpg (451 x 300), a square from ear to ear."""
HALF = 112
"""The canvas' halves meet at this column of Lite0's 224-pixel input (the central crop
keeps 392 of 448 canvas pixels: column 224 of the canvas lands on column 112)."""
MASS_RATIO = 5.0
"""How many times more positive saliency the object's half holds than the other half;
measured 28-157x for fp32 and int8, on either side."""
RISE_MASKS = 300
BRUTE_FORCE_TOLERANCE = 1e-6


def side_photo(side: str) -> Image.Image:
    """Chelsea's face filling the left or right half of a 448 x 448 canvas, mid-height.

    The right one is the left one's mirror image. The rest of the canvas is a flat fill
    of the face's own mean colour: both methods hide pixels under the image's mean
    colour, so hiding background there changes nothing the model can see, and the
    maps measure the object alone. On a grey canvas a hidden square of brown paints
    a new object on the grey: for some crops of the same face that gave the background
    half more positive occlusion mass than the face (the peak stayed on the face).
    """
    face = Image.open(CHELSEA).convert("RGB").crop(CAT_BOX)
    face = face.resize((224, 224), Image.Resampling.LANCZOS)
    colour = tuple(round(c) for c in np.asarray(face).reshape(-1, 3).mean(axis=0))
    canvas = Image.new("RGB", (448, 448), colour)
    canvas.paste(face, (0, 112))
    return canvas if side == "left" else ImageOps.mirror(canvas)


def halves(saliency: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    """(the object's half, the other half) of a map of Lite0's input."""
    left, right = saliency[:, :HALF], saliency[:, HALF:]
    return (left, right) if side == "left" else (right, left)


def on_side(column: int, side: str) -> bool:
    return column < HALF if side == "left" else column >= HALF


@pytest.mark.parametrize("side", ["left", "right"])
def test_occlusion_peaks_on_the_side_the_object_fills(runners: RunnerPool, side: str) -> None:
    spec = get_spec(LITE0)
    chosen = {v: runners.get(LITE0, v) for v in (Variant.FP32, Variant.INT8)}
    photo = side_photo(side)
    for runner in chosen.values():  # both variants see a cat: the class is a sensible one
        best = top_k(runner.predict(preprocess(photo, spec.preprocessing))[0], spec.labels, 1)
        assert best[0].label in CAT_CLASSES

    maps = explain(spec, chosen, photo)

    assert [m.variant for m in maps] == [Variant.FP32, Variant.INT8]
    assert maps[0].target == Category(maps[0].target.index, maps[0].target.label, maps[0].score)
    assert {m.target.index for m in maps} == {maps[0].target.index}
    for m in maps:
        assert m.saliency.shape == (224, 224) and m.saliency.dtype == np.float32
        assert m.evaluations == 1 + 13 * 13  # 32-pixel squares, stride 16, at 224
        own, other = (np.clip(h, 0.0, None).sum() for h in halves(m.saliency, side))
        assert own > MASS_RATIO * other, (m.variant, own, other)
        assert on_side(m.peak[1], side), (m.variant, m.peak)


# One placement for RISE (the other method): occlusion checks both, so a map biased to
# one side is caught there; this checks RISE finds the object at all.
@pytest.mark.parametrize("side", ["right"])
def test_rise_peaks_on_the_side_the_object_fills(runners: RunnerPool, side: str) -> None:
    options = SaliencyOptions(method="rise", masks=RISE_MASKS)

    (fp32,) = explain(
        get_spec(LITE0),
        {Variant.FP32: runners.get(LITE0, "fp32")},
        side_photo(side),
        options=options,
    )

    assert fp32.target.label in CAT_CLASSES
    assert fp32.evaluations == RISE_MASKS + 1
    own, other = halves(fp32.saliency, side)
    assert own.mean() > other.mean()
    assert on_side(fp32.peak[1], side), fp32.peak


# A tiny model whose answer is a known function of its pixels.
TINY = ModelSpec(
    name="tiny",
    title="Tiny",
    source=Source.CUSTOM,
    preprocessing=Preprocessing((8, 10), normalize="unit", crop_fraction=1.0),
    labels=("window", "other"),
    builder="none",
)
WINDOW = (slice(2, 5), slice(3, 8))
CHANNEL_WEIGHTS = np.array([1.0, -0.5, 0.25])


def window_probability(pixels: np.ndarray, gain: float, bias: float) -> float:
    """P(class 0): a sigmoid of the weighted mean of a fixed window of the [0, 1] pixels."""
    z = gain * float((pixels[WINDOW] / 255.0 * CHANNEL_WEIGHTS).mean()) + bias
    return 1.0 / (1.0 + math.exp(-z))


class WindowRunner(Runner):
    """:func:`window_probability` as a runner (on the normalized input the spec gives)."""

    def __init__(self, gain: float = 12.0, bias: float = 1.0) -> None:
        self.spec, self.variant = TINY, Variant.FP32
        self.gain, self.bias = gain, bias

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, np.float64)
        z = self.gain * (x[:, WINDOW[0], WINDOW[1], :] * CHANNEL_WEIGHTS).mean(axis=(1, 2, 3))
        p = 1.0 / (1.0 + np.exp(-(z + self.bias)))
        return np.stack([p, 1.0 - p], axis=1)

    @property
    def size_bytes(self) -> int:
        return 0


def tiny_photo() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (8, 10, 3), dtype=np.uint8)


def test_occlusion_matches_a_brute_force_loop_on_a_tiny_model() -> None:
    pixels = tiny_photo()
    patch, rows, cols = 3, [0, 2, 4, 5], [0, 2, 4, 6, 7]  # stride 2, the last flush by hand
    fill = np.rint(pixels.reshape(-1, 3).mean(axis=0))
    clean = window_probability(pixels, 12.0, 1.0)
    assert clean > 0.5  # class 0 is the top-1, the class explained
    expected = np.zeros((8, 10))
    for i in range(8):
        for j in range(10):
            drops = []
            for r in rows:
                for c in cols:
                    if r <= i < r + patch and c <= j < c + patch:
                        hidden = pixels.astype(np.float64)
                        hidden[r : r + patch, c : c + patch] = fill
                        drops.append(clean - window_probability(hidden, 12.0, 1.0))
            expected[i, j] = np.mean(drops)

    (got,) = explain(
        TINY,
        {Variant.FP32: WindowRunner()},
        Image.fromarray(pixels),
        options=SaliencyOptions(patch=3, stride=2, batch=7),
    )

    assert got.target.index == 0 and got.score == pytest.approx(clean, abs=BRUTE_FORCE_TOLERANCE)
    assert got.evaluations == 1 + len(rows) * len(cols)
    np.testing.assert_allclose(got.saliency, expected, atol=BRUTE_FORCE_TOLERANCE)
    assert np.abs(expected[:, :2]).max() == 0.0  # squares that miss the window change nothing


def test_every_variant_explains_the_first_variants_class() -> None:
    runners = {Variant.FP32: WindowRunner(), Variant.INT8: WindowRunner(bias=-8.0)}
    assert runners[Variant.INT8].predict(np.zeros((1, 8, 10, 3)))[0].argmax() == 1

    maps = explain(TINY, runners, Image.fromarray(tiny_photo()), options=SaliencyOptions(patch=3))

    assert [m.target.index for m in maps] == [0, 0]
    assert maps[1].score < 0.5
    with pytest.raises(ValueError, match=r"Expected target .* Received: target=2"):
        explain(TINY, runners, Image.fromarray(tiny_photo()), target=2)


def test_rise_of_a_model_that_ignores_the_image_is_flat_and_seeded() -> None:
    class Constant(WindowRunner):
        def predict(self, batch: np.ndarray) -> np.ndarray:
            return np.tile([0.3, 0.7], (len(batch), 1))

    image = Image.fromarray(tiny_photo())
    options = SaliencyOptions(method="rise", masks=40, cells=3, batch=16)
    (flat,) = explain(TINY, {Variant.FP32: Constant()}, image, target=0, options=options)
    np.testing.assert_allclose(flat.saliency, 0.3, atol=1e-6)

    (a,) = explain(TINY, {Variant.FP32: WindowRunner()}, image, options=options)
    (b,) = explain(
        TINY,
        {Variant.FP32: WindowRunner()},
        image,
        options=SaliencyOptions(method="rise", masks=40, cells=3, batch=7),
    )
    np.testing.assert_allclose(a.saliency, b.saliency, atol=1e-9)  # masks do not hang on batch


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"patch": 0}, "Received: patch=0"),
        ({"method": "gradcam"}, "Received: method='gradcam'"),
        ({"patch": 8, "stride": 9}, "Received: stride=9, patch=8"),
        ({"keep": 0.0}, "Received: keep=0.0"),
        ({"masks": -1}, "Received: masks=-1"),
    ],
)
def test_options_say_what_they_expected(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^Expected .*{message}"):
        SaliencyOptions(**options)


def test_top_region_iou_by_hand() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((10, 10))
    assert top_region_iou(a, a) == 1.0
    row0, row9, shifted = np.zeros((10, 10)), np.zeros((10, 10)), np.zeros(100)
    row0[0], row9[9], shifted[5:15] = 1.0, 1.0, 1.0
    assert top_region_iou(row0, row9) == 0.0
    # Top ten: pixels 0-9 against 5-14, five shared of fifteen.
    assert top_region_iou(row0, shifted.reshape(10, 10)) == pytest.approx(1 / 3)
    # A plateau at the threshold is taken whole: the top ceil(0.1 * 35) = 4 values of
    # `steps` are 3, 2, 2, 2 (pixels 0-3), then 2 again at 4-6: region {0..6}; `four` lit
    # at {3..6}: four shared of seven. Cut by position it would have been {0..3}: 1 of 7.
    steps, four = np.zeros(35), np.zeros(35)
    steps[0], steps[1:7], four[3:7] = 3.0, 2.0, 1.0
    assert top_region_iou(steps.reshape(7, 5), four.reshape(7, 5)) == pytest.approx(4 / 7)
    # A map flat but for a few pixels: only those count (not the whole floor); two flat
    # maps have nothing above their floors and agree.
    flat = np.ones((7, 5))
    assert top_region_iou(flat, four.reshape(7, 5)) == 0.0
    assert top_region_iou(flat, flat * 2) == 1.0
    # 0.1 * 30 is 3.0000000000000004 in floating point: three pixels, not four.
    ramp, moved = np.arange(30.0), np.arange(30.0)
    moved[26] = 100.0  # top three {26, 29, 28} against {29, 28, 27}
    assert top_region_iou(ramp, moved) == pytest.approx(2 / 4)


def test_pairs_and_pictures() -> None:
    first, second = np.zeros((6, 8), np.float32), np.zeros((6, 8), np.float32)
    first[0, 0], second[3, 4] = 1.0, 1.0
    cat = Category(0, "window", 0.9)
    maps = [
        SaliencyMap(v, "occlusion", cat, 0.9, s, 0.0, 1)
        for v, s in ((Variant.FP32, first), (Variant.INT8, second))
    ]
    (row,) = pairs(maps)
    assert row["reference"] == "fp32" and row["variant"] == "int8"
    # Each map is zero but for one pixel: only that pixel stands above the floor, and
    # the two are apart (the floor's ties do not make them overlap).
    assert row["peak_distance"] == 5.0 and row["iou_top10"] == 0.0
    assert maps[1].as_dict()["peak"] == [3, 4]

    picture = Image.new("RGB", (8, 6), (10, 200, 30))
    assert overlay(picture, first, alpha=0.0).tobytes() == picture.tobytes()
    assert overlay(picture, first).size == (8, 6) and overlay(picture, first).mode == "RGB"
    same = np.asarray(difference(first, first))
    assert (same == 255).all()  # white at zero
    drawn = np.asarray(difference(first, second))
    assert drawn[0, 0, 0] > drawn[0, 0, 2] and drawn[3, 4, 2] > drawn[3, 4, 0]  # red, blue
    assert (drawn[1, 1] == 255).all()
    # A near-copy stays near white on the reference's own scale, unless asked otherwise.
    near = np.asarray(difference(first, first * 0.99))
    assert near.min() >= 240
    stretched = np.asarray(difference(first, first * 0.99, reach=0.01 * np.abs(first).max()))
    assert stretched.min() < 100


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    status = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, captured.out, captured.err)


def test_explain_cli_json_has_one_map_per_variant(
    runners: RunnerPool, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    runners.convert(LITE0, [Variant.FP32, Variant.INT8])

    result = run_in_process(
        capsys,
        "explain",
        str(CHELSEA),
        "--model",
        LITE0,
        "--variant",
        "fp32,int8",
        "--save",
        str(tmp_path),
        "--json",
    )

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["image"], r["variant"]) for r in rows] == [
        (str(CHELSEA), "fp32"),
        (str(CHELSEA), "int8"),
    ]
    for row in rows:
        assert row["model"] == LITE0 and row["method"] == "occlusion"
        grid = row["saliency"]
        assert len(grid) == 224 and all(len(line) == 224 for line in grid)
        assert all(isinstance(v, float) for line in grid for v in line)
        assert grid[row["peak"][0]][row["peak"][1]] == max(max(line) for line in grid)
    assert rows[0]["class"] == rows[1]["class"] and rows[0]["label"] in CAT_CLASSES
    assert rows[0]["iou_top10"] is None and 0.0 <= rows[1]["iou_top10"] <= 1.0
    for name in ("chelsea-fp32.png", "chelsea-int8.png", "chelsea-fp32-minus-int8.png"):
        with Image.open(tmp_path / name) as saved:
            assert saved.size == (224, 224) and saved.mode == "RGB"


@pytest.mark.parametrize(
    ("args", "status", "parts"),
    [
        (["--patch", "0"], 2, ["Expected patch", "patch=0"]),
        (["--patch", "300"], 2, ["Expected patch", "patch=300"]),
        (["--variant", "fp32,int9"], 2, ["expected variant", "'int9'"]),
        (["--target", "1000"], 2, ["Expected target", "target=1000"]),
    ],
    ids=["patch-0", "patch-too-big", "variant", "target"],
)
def test_explain_cli_bad_options_give_one_error_line(
    capsys: pytest.CaptureFixture[str], args: list[str], status: int, parts: list[str]
) -> None:
    result = run_in_process(capsys, "explain", str(CHELSEA), *args)
    assert_one_error_line(result, status, *parts)


def test_explain_cli_missing_file_gives_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_in_process(capsys, "explain", "missing.jpg", "--variant", "fp32")
    assert_one_error_line(result, 1, "missing.jpg", "no such file")
