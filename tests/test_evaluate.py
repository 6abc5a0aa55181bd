"""Evaluation on labelled folders and zips made from real images."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from inference import InputError, Variant, get_spec
from inference.analysis.evaluate import _match_folders, evaluate, label_key, scan_folder, scan_zip
from inference.core.paths import ASSETS_DIR
from tests.conftest import RunnerPool, run_cli

FASHION_SAMPLE = ASSETS_DIR / "fashion_mnist_sample"
# A VGG-style CNN reaches about 92 % on Fashion-MNIST; 200 images leave a few points of noise.
MIN_SAMPLE_ACCURACY = 0.85
# Full-integer quantization of this CNN may cost about a point; on 200 images, allow 3.
MAX_INT8_LOSS = 0.03


@pytest.mark.parametrize(
    ("folder", "label"),
    [
        ("t_shirt_top", "T-shirt/top"),
        ("tiger_cat", "tiger cat"),
        ("Ankle-Boot", "Ankle boot"),
        ("ESPRESSO", "espresso"),
    ],
)
def test_folder_names_match_labels_ignoring_case_and_punctuation(folder: str, label: str) -> None:
    assert label_key(folder) == label_key(label)


def test_a_folder_matching_no_label_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sneaker").mkdir()
    (tmp_path / "spaceship").mkdir()

    with pytest.raises(InputError, match=r"'spaceship' match no label .*'T-shirt/top'"):
        scan_folder(tmp_path, get_spec("fashion_mnist_cnn").labels)


def test_empty_folders_and_non_images_are_reported_by_name(tmp_path: Path) -> None:
    shutil.copytree(FASHION_SAMPLE / "bag", tmp_path / "bag")
    (tmp_path / "coat").mkdir()
    (tmp_path / "bag" / "readme.png").write_text("not a picture")
    (tmp_path / "notes.txt").write_text("stray")
    spec = get_spec("fashion_mnist_cnn")

    dataset = scan_folder(tmp_path, spec.labels)

    assert any(p.startswith("coat/: empty folder") for p in dataset.problems)
    assert any(p.startswith("notes.txt") for p in dataset.problems)
    assert len(dataset.images) == 21  # 20 bags and the fake one, caught at decode time


@pytest.fixture(scope="module")
def fashion_evaluation(runners: RunnerPool):
    spec = get_spec("fashion_mnist_cnn")
    runners.convert("fashion_mnist_cnn", list(Variant))  # every variant, in one converter run
    variant_runners = {v: runners.get("fashion_mnist_cnn", v) for v in Variant}
    return evaluate(spec, variant_runners, scan_folder(FASHION_SAMPLE, spec.labels))


def test_every_variant_classifies_real_fashion_mnist_images(fashion_evaluation) -> None:
    report = fashion_evaluation
    scores = {s.variant: s for s in report.scores}

    assert report.images == 200 and len(report.classes) == 10
    assert report.reference is Variant.ORIGINAL
    for variant, score in scores.items():
        assert score.accuracy >= MIN_SAMPLE_ACCURACY, (variant, score.accuracy)
        assert score.top5 >= score.accuracy
        assert score.confusion.sum() == 200
        assert np.trace(score.confusion[:, :10]) == round(score.accuracy * 200)
    original = scores[Variant.ORIGINAL].accuracy
    assert scores[Variant.FP32].accuracy == original
    assert scores[Variant.INT8].accuracy >= original - MAX_INT8_LOSS
    assert scores[Variant.ORIGINAL].agreement is None
    assert scores[Variant.FP32].agreement == pytest.approx(1.0)


def test_per_class_accuracy_matches_the_confusion_matrix(fashion_evaluation) -> None:
    report = fashion_evaluation
    score = report.scores[0]
    for row, index in enumerate(report.classes):
        assert score.per_class[index] == pytest.approx(score.confusion[row, row] / 20)
    rows = report.per_class_rows()
    assert [r["class"] for r in rows][:2] == ["T-shirt/top", "Trouser"]


def test_zip_upload_gives_the_same_result_and_never_uses_member_names_as_paths(
    runners: RunnerPool, tmp_path: Path, fashion_evaluation
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(FASHION_SAMPLE.rglob("*.png")):
            archive.write(path, f"sample/{path.parent.name}/{path.name}")
        archive.writestr("../../escape/trouser/evil.png", b"not an image")
    spec = get_spec("fashion_mnist_cnn")

    dataset = scan_zip(buffer.getvalue(), spec.labels)
    report = evaluate(spec, {Variant.FP32: runners.get("fashion_mnist_cnn", Variant.FP32)}, dataset)

    # Members are read as bytes and named "class/file": no archive path survives.
    assert all(isinstance(item.source, bytes) for item in dataset.images)
    assert all(item.name.count("/") == 1 and ".." not in item.name for item in dataset.images)
    assert report.images == 200
    assert any("evil.png" in p for p in report.problems)
    expected = next(s for s in fashion_evaluation.scores if s.variant is Variant.FP32)
    assert report.scores[0].accuracy == expected.accuracy


def test_ambiguous_and_non_latin_folder_names() -> None:
    imagenet = get_spec("efficientnet_lite0").labels
    assert imagenet.count("crane") == 2  # the bird and the machine share a name

    with pytest.raises(InputError, match="'crane' matches 2 labels"):
        _match_folders(["crane"], imagenet)

    labels = ("猫", "犬", "Ünïcode label")
    assert _match_folders(["犬", "ünïcode_LABEL"], labels) == {"犬": 1, "ünïcode_LABEL": 2}
    with pytest.raises(InputError, match="match no label"):
        _match_folders(["鳥"], labels)


def test_not_a_zip() -> None:
    with pytest.raises(InputError, match="not a zip archive"):
        scan_zip(b"PK but not really", ("a", "b"), name="data.zip")


def test_imagenet_folder_names_with_spaces(
    runners: RunnerPool, chelsea: Path, coffee: Path, tmp_path: Path
) -> None:
    for folder, photo in (("Egyptian cat", chelsea), ("espresso", coffee)):
        (tmp_path / folder).mkdir()
        shutil.copy(photo, tmp_path / folder / photo.name)
    spec = get_spec("efficientnet_lite0")

    dataset = scan_folder(tmp_path, spec.labels)
    report = evaluate(
        spec, {Variant.INT8: runners.get("efficientnet_lite0", Variant.INT8)}, dataset
    )

    assert [spec.labels[i] for i in report.classes] == ["Egyptian_cat", "espresso"]
    assert report.scores[0].top5 == 1.0  # the cat classes and espresso are all in the top 5


def test_evaluate_command(runners: RunnerPool) -> None:
    runners.convert("fashion_mnist_cnn", [Variant.FP32, Variant.INT8])

    result = run_cli(
        "evaluate", "--model", "fashion_mnist_cnn", "--data", str(FASHION_SAMPLE),
        "--variants", "fp32,int8", "--format", "json",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 200 and report["reference"] == "fp32"
    assert [row["variant"] for row in report["summary"]] == ["fp32", "int8"]
    assert len(report["confusion"]["int8"]) == 10
    assert report["confusion_labels"][-1] == "other"


def test_evaluate_command_unknown_folder(tmp_path: Path) -> None:
    (tmp_path / "spaceship").mkdir()

    result = run_cli("evaluate", "--model", "fashion_mnist_cnn", "--data", str(tmp_path))

    assert result.returncode == 1
    assert result.stderr.startswith("error: class folder(s) 'spaceship' match no label")
