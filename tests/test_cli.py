"""``python -m inference``: JSON contracts and one-line errors.

Commands that load a model run as a user runs them (a child process); argument
and usage errors run in this process through :func:`inference.cli.main`, which
saves an interpreter start each.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from inference import ZOO, Variant, get_spec
from inference.cli import COMMAND_NAMES, build_parser, main
from inference.core.specs import TFLITE_VARIANTS
from tests.conftest import CAT_CLASSES, REPO_ROOT, RunnerPool, assert_one_error_line, run_cli


def run_in_process(
    capsys: pytest.CaptureFixture[str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``main(args)`` here, shaped like :func:`run_cli`'s answer."""
    status = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, captured.out, captured.err)


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
    # Every TFLite variant in one converter run of the session pool, so the CLI only predicts.
    runners.convert("efficientnet_lite0", TFLITE_VARIANTS)

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
def test_bad_input_gives_one_error_line(
    capsys: pytest.CaptureFixture[str], args: list[str], status: int, parts: list[str]
) -> None:
    assert_one_error_line(run_in_process(capsys, *args), status, *parts)


@pytest.mark.parametrize(
    ("args", "status", "parts"),
    [
        (["predict", "missing.jpg"], 1, ["missing.jpg", "no such file"]),
        (["classify"], 2, ["invalid choice", "'classify'"]),
    ],
    ids=["input", "usage"],
)
def test_the_entry_point_gives_one_error_line(
    args: list[str], status: int, parts: list[str]
) -> None:
    assert_one_error_line(run_cli(*args), status, *parts)


@pytest.mark.parametrize("command", COMMAND_NAMES)
def test_every_command_takes_json(capsys: pytest.CaptureFixture[str], command: str) -> None:
    assert main([command, "--help"]) == 0
    assert "--json" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args", [["bench"], ["evaluate", "--data", "sample"]], ids=["bench", "evaluate"]
)
def test_json_is_format_json_for_the_table_commands(args: list[str]) -> None:
    parser = build_parser()

    assert parser.parse_args([*args, "--json"]) == parser.parse_args([*args, "--format", "json"])
    assert parser.parse_args(args).format == "markdown"


def test_json_with_another_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_in_process(capsys, "bench", "--json", "--format", "csv")

    assert_one_error_line(result, 2, "--format", "not allowed with", "--json")


@pytest.mark.slow
def test_bench_and_evaluate_json_print_what_format_json_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sample = get_spec("fashion_mnist_cnn").labelled_sample
    assert sample is not None
    evaluate = ["evaluate", "--model", "fashion_mnist_cnn", "--data", str(sample),
                "--variants", "fp32,int8"]  # fmt: skip
    bench = ["bench", "--models", "fashion_mnist_cnn", "--variants", "fp32,int8",
             "--runs", "3", "--warmup", "1"]  # fmt: skip
    answers = {}
    for name, args in (("evaluate", evaluate), ("bench", bench)):
        for flags in (["--json"], ["--format", "json"]):
            result = run_in_process(capsys, *args, *flags)
            assert result.returncode == 0, result.stderr
            answers[name, flags[0]] = json.loads(result.stdout)

    def untimed(report: dict) -> dict:
        rows = [{k: v for k, v in row.items() if "ms" not in k} for row in report["summary"]]
        # The run's timings and which worker process took which shard vary run to run.
        run = {k: report["run"][k] for k in ("engine", "images")}
        return {**report, "summary": rows, "run": run}

    assert untimed(answers["evaluate", "--json"]) == untimed(answers["evaluate", "--format"])
    assert answers["evaluate", "--json"]["images"] == 200
    flag, format_json = answers["bench", "--json"], answers["bench", "--format"]
    assert set(flag) == set(format_json) and len(flag["results"]) == 2
    assert {k: flag[k] for k in ("machine", "simd", "int8_outlook", "images")} == {
        k: format_json[k] for k in ("machine", "simd", "int8_outlook", "images")
    }
    assert [(r["model"], r["variant"], list(r)) for r in flag["results"]] == [
        (r["model"], r["variant"], list(r)) for r in format_json["results"]
    ]
    assert [t["target"] for t in flag["targets"]] == [t["target"] for t in format_json["targets"]]


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
