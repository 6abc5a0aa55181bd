"""Benchmark statistics on known inputs, the MAC count, targets, and the bench command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference import InferenceError, Variant
from inference.analysis.benchmark import (
    BenchResult,
    LatencyStats,
    Target,
    count_macs,
    stage_timings,
    targets,
)
from inference.cli.bench import litert_benchmark, litert_benchmark_command, parse_litert_benchmark
from inference.core.machine import int8_outlook, simd
from tests.conftest import CAT_CLASSES, RunnerPool, run_cli

# What litert-benchmark (ai-edge-litert 2.3.0) printed on stdout for Lite0 int8 here.
LITERT_OUTPUT = """
========================================
 BENCHMARK RESULTS
========================================
Model initialization:  11.95 ms
Warmup (first):        3.11 ms
Warmup (avg):          5.81 ms (5 runs)
Inference (avg):       7.13 ms (50 runs)
Inference (min):       4.68 ms
Inference (max):       12.75 ms
Inference (median):    6.83 ms
Inference (std):       2.04 ms
Inference (p5):        4.79 ms
Inference (p95):       9.71 ms
Throughput:            20.13 MB/s
Fully accelerated:     False
========================================
"""
# A stage breakdown's parts (medians of each stage) against the median whole run,
# which also holds top-k and the calls between stages.


def test_latency_stats_on_known_samples() -> None:
    stats = LatencyStats.from_samples([5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 6.0, 7.0, 8.0, 9.0])

    assert stats.runs == 10
    assert stats.median == 5.5
    assert stats.min == 1.0 and stats.max == 10.0
    assert stats.mean == 5.5
    assert stats.p90 == pytest.approx(9.1)  # linear interpolation between 9 and 10
    assert stats.std == pytest.approx(np.sqrt(8.25))  # population standard deviation


def test_latency_stats_single_sample_and_empty() -> None:
    one = LatencyStats.from_samples([2.5])
    assert (one.median, one.p90, one.std) == (2.5, 2.5, 0.0)

    with pytest.raises(ValueError, match="at least one timed run"):
        LatencyStats.from_samples([])


def _result(variant: Variant, median: float, macs: int | None = 400_000_000) -> BenchResult:
    return BenchResult(
        model="efficientnet_lite0",
        variant=variant,
        threads=2,
        load_ms=1.0,
        first_ms=1.0,
        warmup_runs=1,
        latency=LatencyStats.from_samples([median]),
        size_bytes=1,
        rss_delta_bytes=0,
        macs=macs,
    )


def test_targets_are_ratios_of_medians() -> None:
    results = [
        _result(Variant.ORIGINAL, 40.0),
        _result(Variant.FP32, 8.0),
        _result(Variant.INT8, 3.0),
    ]

    found = {t.name: t for t in targets(results, runner_vs_bare=1.1, twelve_mp_ms=70.0)}

    assert found["lite0 int8 median / TFLite fp32 median"].value == pytest.approx(0.375)
    assert found["lite0 int8 median / TFLite fp32 median"].met
    assert found["lite0 int8 median / Keras original median"].value == pytest.approx(0.075)
    assert found["project runner / bare LiteRT invoke (int8 median)"].met
    assert not found["12 MP JPEG to top-k, int8 (median)"].met
    assert "bench int8 median / litert-benchmark median" not in found  # not measured


def test_the_litert_benchmark_target_is_int8_over_its_median() -> None:
    results = [_result(Variant.INT8, 2.75)]

    (found,) = targets(results, litert_median_ms=2.5)

    assert found.name == "bench int8 median / litert-benchmark median"
    assert found.value == pytest.approx(1.1) and found.limit == 1.10


def test_gmacs_per_second() -> None:
    assert _result(Variant.INT8, 4.0).gmacs_per_second == pytest.approx(100.0)
    assert _result(Variant.INT8, 4.0, macs=None).gmacs_per_second is None
    assert Target("x", 1.0, 1.0).met and not Target("x", 1.01, 1.0).met


def test_mac_count_matches_the_keras_layers(runners: RunnerPool) -> None:
    """Counted from the .tflite ops, checked against the Keras layers' own shapes."""
    import keras

    path = runners.path("efficientnet_lite0", Variant.FP32)
    model = runners.get("efficientnet_lite0", Variant.ORIGINAL).model
    expected = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            h, w, c = layer.output.shape[1:]
            expected += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, c = layer.output.shape[1:]
            expected += (
                h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
            )
        elif isinstance(layer, keras.layers.Dense):
            expected += layer.input.shape[-1] * layer.units

    assert count_macs(path) == expected
    assert 350e6 < expected < 450e6  # EfficientNet-Lite0 is published at about 0.4 GMAC


def test_bench_command_prints_the_table_and_the_answer_table(
    runners: RunnerPool, chelsea: Path, coffee: Path, tmp_path: Path
) -> None:
    runners.convert("efficientnet_lite0", [Variant.FP32, Variant.INT8])
    images = tmp_path / "images"
    images.mkdir()
    for photo in (chelsea, coffee):
        shutil.copy(photo, images / photo.name)

    result = run_cli(
        "bench", "--variants", "fp32,int8", "--runs", "5", "--warmup", "1",
        "--images", str(images), "--format", "json",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {row["variant"]: row for row in report["results"]}
    assert set(rows) == {"fp32", "int8"}
    for row in rows.values():
        assert row["runs"] == 5 and row["threads"] >= 1
        assert row["min ms"] <= row["median ms"] <= row["p90 ms"] <= row["max ms"]
        assert row["GMAC/s"] > 0 and row["size MB"] > 0
    assert rows["int8"]["size MB"] < rows["fp32"]["size MB"] / 3
    assert rows["fp32"]["convert s"] > 0  # from the file's sidecar
    assert report["simd"] == list(simd()) and report["int8_outlook"] == int8_outlook(simd())
    names = {t["target"] for t in report["targets"]}
    assert "lite0 int8 median / TFLite fp32 median" in names
    assert "12 MP JPEG to top-k, int8 (median)" in names
    reference = report["litert_benchmark"]
    if litert_benchmark_command() is None:
        assert reference is None
    else:
        assert reference["median_ms"] > 0 and reference["runs"] == 5
        assert reference["model"].endswith(".tflite") and "int8" in reference["model"]
        assert "bench int8 median / litert-benchmark median" in names
    stages = {row["image"]: row for row in report["stages"]}
    assert set(stages) == {"chelsea.jpg", "12 MP JPEG (4000x3000)", "chelsea.png", "coffee.png"}
    for row in stages.values():
        assert min(row["decode_ms"], row["preprocess_ms"], row["inference_ms"]) > 0
        assert row["images_per_second"] == pytest.approx(1e3 / row["total_ms"], rel=0.01)
    answers = {row["image"]: row for row in report["images"]}
    assert answers["chelsea.png"]["efficientnet_lite0 int8"].split(",")[0] in CAT_CLASSES
    assert answers["coffee.png"]["efficientnet_lite0 fp32"].endswith(" ms")


def test_bench_markdown_names_the_machine(runners: RunnerPool) -> None:
    runners.convert("efficientnet_lite0", [Variant.INT8])

    result = run_cli("bench", "--variants", "int8", "--runs", "3", "--warmup", "1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| model | variant | threads |")
    assert "cores available" in result.stdout
    assert int8_outlook(simd()) in result.stdout


def test_bench_rejects_unknown_models() -> None:
    result = run_cli("bench", "--models", "efficientnet_lite0,alexnet")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("error: ")
    ]
    assert "'alexnet'" in result.stderr


def test_run_benchmarks_measures_a_tflite_someone_brought(
    runners: RunnerPool, tmp_path: Path
) -> None:
    from inference import custom_spec
    from inference.analysis.benchmark import run_benchmarks

    fp32 = runners.path("efficientnet_lite0", Variant.FP32)
    mine = tmp_path / "mine.tflite"
    shutil.copyfile(fp32, mine)
    spec = custom_spec(mine, normalize="lite")

    measured = run_benchmarks([(spec, Variant.FP32)], runs=3, warmup=1)

    ((result, runner),) = measured
    assert result.model == spec.name and result.latency.runs == 3
    assert result.macs == count_macs(fp32)  # counted from the file itself
    runner.close()


def test_simd_features_are_read_from_cpuinfo_and_explained() -> None:
    zen3 = "processor : 0\nflags : fpu sse sse2 avx avx2 fma bmi2\n"
    sapphire = "flags : avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile\n"
    graviton = "processor : 0\nFeatures : fp asimd evtstrm aes asimddp i8mm\n"

    assert simd(zen3) == ("avx2", "fma")
    assert simd(sapphire) == ("avx2", "fma", "avx512f", "avx512_vnni", "amx_int8")
    assert simd(graviton) == ("asimddp", "i8mm")
    assert "no int8 dot-product" in int8_outlook(simd(zen3))
    assert "(avx512_vnni)" in int8_outlook(simd(sapphire))
    assert "(asimddp)" in int8_outlook(simd(graviton))
    assert "cannot be predicted" in int8_outlook(simd(""))


def test_litert_benchmark_output_is_parsed() -> None:
    figures = parse_litert_benchmark(LITERT_OUTPUT)

    assert figures["median"] == 6.83 and figures["avg"] == 7.13
    assert (figures["min"], figures["max"], figures["p95"]) == (4.68, 12.75, 9.71)
    assert "initialization" not in figures  # only the timed runs' figures
    with pytest.raises(ValueError, match="Inference \\(median\\)"):
        parse_litert_benchmark("Model initialization: 11.95 ms\n")


def test_litert_benchmark_runs_on_the_int8_file(runners: RunnerPool) -> None:
    command = litert_benchmark_command()
    if command is None:
        pytest.skip("litert-benchmark is not installed beside python or on PATH")
    path = runners.path("efficientnet_lite0", Variant.INT8)

    found = litert_benchmark(path, runs=3, warmup=1, threads=1)

    assert found is not None and found.command == str(command)
    assert found.median_ms > 0 and found.runs == 3 and found.warmup_runs == 1
    assert found.as_dict()["median_ms"] == found.median_ms


def test_litert_benchmark_missing_or_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert litert_benchmark_command() is None
    assert litert_benchmark(tmp_path / "m.tflite", runs=3, warmup=1, threads=1) is None

    failing = tmp_path / "litert-benchmark"
    failing.write_text("#!/bin/sh\necho 'Model file not found' >&2\nexit 1\n")
    failing.chmod(0o755)
    assert litert_benchmark_command() == failing
    with pytest.raises(InferenceError, match="exited with 1: Model file not found"):
        litert_benchmark(tmp_path / "m.tflite", runs=3, warmup=1, threads=1)


def test_stage_timings_name_each_stage_of_a_real_classification(
    runners: RunnerPool, chelsea: Path
) -> None:
    runner = runners.get("efficientnet_lite0", Variant.INT8)

    stages = stage_timings(runner, chelsea, runs=9)

    parts = (stages.decode_ms, stages.preprocess_ms, stages.inference_ms)
    # Medians of separate columns need not add up to the median whole on a busy machine;
    # how the parts compare is the bench command's to report, not a test's.
    assert stages.image == "chelsea.png" and min(parts) > 0 and stages.total_ms > 0
    assert stages.images_per_second == pytest.approx(1e3 / stages.total_ms)
    assert set(stages.as_row()) == {
        "image", "decode_ms", "preprocess_ms", "inference_ms", "total_ms", "images_per_second",
    }  # fmt: skip
