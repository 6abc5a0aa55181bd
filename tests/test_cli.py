"""``python -m inference``: JSON contracts and one-line errors, run as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference import ZOO, Variant
from tests.conftest import CAT_CLASSES, REPO_ROOT, RunnerPool, assert_one_error_line, run_cli


def test_models_json_lists_the_zoo() -> None:
    result = run_cli("models", "--json")

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == list(ZOO)
    by_name = {row["name"]: row for row in rows}
    lite0 = by_name["efficientnet_lite0"]
    assert lite0["input_size"] == [224, 224]
    assert lite0["num_classes"] == 1000
    assert lite0["source"] == "bundled" and lite0["available_offline"] is True
    assert lite0["variants"] == [v.value for v in Variant]
    assert by_name["xception"]["input_size"] == [299, 299]
    assert by_name["mobilenet_v2"]["source"] == "download"


def test_predict_json_all_variants(runners: RunnerPool, chelsea: Path, coffee: Path) -> None:
    for variant in Variant:  # convert through the session pool, so this only predicts
        runners.get("efficientnet_lite0", variant)

    result = run_cli(
        "predict", str(chelsea), str(coffee), "--variant", "all", "--top-k", "3", "--json"
    )

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(Path(r["image"]).name, r["variant"]) for r in rows] == [
        (photo.name, v.value) for photo in (chelsea, coffee) for v in Variant
    ]
    for row in rows:
        assert row["model"] == "efficientnet_lite0"
        assert len(row["top_k"]) == 3
        assert set(row["top_k"][0]) == {"index", "label", "score"}
        assert set(row["timing_ms"]) == {"decode", "preprocess", "inference", "total"}
        timing = row["timing_ms"]
        parts = timing["decode"] + timing["preprocess"] + timing["inference"]
        assert timing["total"] == pytest.approx(parts, abs=0.01)
        labels = {c["label"] for c in row["top_k"]}
        if Path(row["image"]).name == "chelsea.png":
            assert labels & CAT_CLASSES
        else:
            assert row["top_k"][0]["label"] in {"espresso", "cup"}


def test_predict_defaults_to_int8_top_5(runners: RunnerPool, chelsea: Path) -> None:
    runners.get("efficientnet_lite0", Variant.INT8)

    result = run_cli("predict", str(chelsea), "--json")

    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["variant"] == "int8" and len(row["top_k"]) == 5
    assert result.stderr == ""


def test_predict_text_output(runners: RunnerPool, chelsea: Path) -> None:
    runners.get("efficientnet_lite0", Variant.INT8)

    result = run_cli("predict", str(chelsea))

    assert result.returncode == 0
    assert "efficientnet_lite0 int8" in result.stdout
    assert any(label in result.stdout for label in CAT_CLASSES)


@pytest.mark.parametrize(
    ("args", "status", "parts"),
    [
        (["predict", "missing.jpg"], 1, ["missing.jpg", "no such file"]),
        (["predict", "README.md", "--model", "resnet9000"], 1, ["expected model", "'resnet9000'"]),
        (["predict", "README.md", "--variant", "int9"], 2, ["expected variant", "'int9'"]),
        (["predict", "README.md", "--top-k", "zero"], 2, ["--top-k", "'zero'"]),
        (["predict"], 2, ["required"]),
        (["classify"], 2, ["invalid choice", "'classify'"]),
        (["convert", "--variant", "original"], 2, ["fp32", "'original'"]),
    ],
    ids=["missing", "model", "variant", "top-k", "no-image", "command", "convert-original"],
)
def test_bad_input_gives_one_error_line(args: list[str], status: int, parts: list[str]) -> None:
    assert_one_error_line(run_cli(*args), status, *parts)


def test_not_an_image_names_the_file(runners: RunnerPool, tmp_path: Path) -> None:
    runners.get("efficientnet_lite0", Variant.INT8)
    fake = tmp_path / "holiday.jpg"
    fake.write_text("#!/bin/sh\necho not a photo\n")

    result = run_cli("predict", str(fake), "--json")

    assert_one_error_line(result, 1, "holiday.jpg", "not an image")
    assert json.loads(result.stdout) == []


def test_offline_download_model_fails_with_one_line(tmp_path: Path) -> None:
    # A proxy on a closed port stands in for "no internet" even on a machine that has it.
    offline = {
        "KERAS_HOME": str(tmp_path / "keras"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
    }
    photo = REPO_ROOT / "assets" / "samples" / "coffee.jpg"

    result = run_cli(
        "predict", str(photo), "--model", "mobilenet_v2", "--variant", "original", env=offline
    )

    assert_one_error_line(result, 1, "mobilenet_v2", "internet", "efficientnet_lite0")
