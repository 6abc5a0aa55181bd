"""The pages' DataFrames, from hand-made predictions, benchmarks and evaluations (no model runs)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from inference import Category, Prediction, Timing, Variant
from inference.analysis.benchmark import BenchResult, LatencyStats
from inference.analysis.evaluate import Evaluation, VariantScore
from ui import tables


def prediction(label: str, score: float, inference_ms: float) -> Prediction:
    """A stored result; its image name is the one it was first classified under."""
    return Prediction(
        image="stored.jpg",
        model="m",
        variant=Variant.INT8,
        top_k=(Category(0, label, score),),
        timing=Timing(decode=1.0, preprocess=2.0, inference=inference_ms),
    )


def bench(model: str, variant: Variant, samples: list[float], size_bytes: int) -> BenchResult:
    return BenchResult(
        model=model,
        variant=variant,
        threads=1,
        load_ms=0.0,
        first_ms=0.0,
        warmup_runs=0,
        latency=LatencyStats.from_samples(samples),
        size_bytes=size_bytes,
        rss_delta_bytes=0,
        macs=None,
        samples_ms=tuple(samples),
    )


def score(
    variant: Variant, accuracy: float, median_ms: float, agreement: float | None
) -> VariantScore:
    return VariantScore(
        variant=variant,
        accuracy=accuracy,
        top5=1.0,
        agreement=agreement,
        per_class={0: accuracy, 1: 1.0},
        confusion=np.array([[3, 1, 0], [0, 4, 0]]),
        median_ms=median_ms,
    )


REPORT = Evaluation(
    model="fashion",
    reference=Variant.FP32,
    classes=(0, 1),
    labels=("shirt", "shoe"),
    images=8,
    scores=(
        score(Variant.FP32, 0.875, 7.5, None),
        score(Variant.INT8, 0.75, 9.0, 0.87654),
    ),
    problems=(),
)


def test_answer_rows_use_the_shown_name_not_the_stored_one() -> None:
    rows = tables.answer_rows(
        "image (2).jpg", "lite0", {Variant.INT8: prediction("cup", 0.87654, 12.34)}
    )

    assert rows == [
        {
            "image": "image (2).jpg",
            "model": "lite0",
            "variant": "int8",
            "config": "lite0 · int8",
            "top-1": "cup",
            "score": 0.8765,
            "inference ms": 12.34,
            "cell": "cup, 12.3 ms",
        }
    ]


def test_the_answer_grid_keeps_images_and_configs_in_the_order_first_seen() -> None:
    rows = [
        *tables.answer_rows(
            "zebra.jpg",
            "b",
            {Variant.INT8: prediction("zebra", 0.9, 2.0), Variant.FP32: prediction("zebra", 1, 4)},
        ),
        *tables.answer_rows("image.jpg", "b", {Variant.INT8: prediction("cat", 0.5, 3.0)}),
        *tables.answer_rows("image (2).jpg", "a", {Variant.FP32: prediction("cup", 0.5, 5.0)}),
    ]
    answers = pd.DataFrame(rows, columns=tables.ANSWER_COLUMNS)

    grid = tables.answer_grid(answers)

    assert list(grid.index) == ["zebra.jpg", "image.jpg", "image (2).jpg"]
    assert list(grid.columns) == ["b · int8", "b · fp32", "a · fp32"]
    assert grid.loc["zebra.jpg", "b · fp32"] == "zebra, 4.0 ms"
    assert grid.loc["image.jpg", "b · int8"] == "cat, 3.0 ms"
    assert grid.loc["image (2).jpg", "a · fp32"] == "cup, 5.0 ms"
    assert pd.isna(grid.loc["image.jpg", "a · fp32"])  # not every image has every config


def test_the_answers_csv_leaves_out_the_grid_cell() -> None:
    rows = tables.answer_rows("a.jpg", "m", {Variant.FP32: prediction("cat", 0.5, 1.25)})
    answers = pd.DataFrame(rows, columns=tables.ANSWER_COLUMNS)

    assert tables.answers_csv(answers).decode().splitlines() == [
        "image,model,variant,config,top-1,score,inference ms",
        "a.jpg,m,fp32,m · fp32,cat,0.5,1.25",
    ]


def test_reference_top_prefers_the_original_then_the_first() -> None:
    fp32, original = prediction("cat", 0.6, 1.0), prediction("dog", 0.7, 1.0)

    assert tables.reference_top({Variant.FP32: fp32, Variant.ORIGINAL: original}).label == "dog"
    assert tables.reference_top({Variant.FP32: fp32}).label == "cat"


def test_benchmark_samples_give_one_row_per_timed_run() -> None:
    results = [bench("m", Variant.FP32, [2.0, 1.0], 10), bench("m", Variant.INT8, [0.5], 5)]

    samples = tables.benchmark_samples(results)

    assert samples.to_dict("records") == [
        {"config": "m · fp32", "variant": "fp32", "ms": 2.0},
        {"config": "m · fp32", "variant": "fp32", "ms": 1.0},
        {"config": "m · int8", "variant": "int8", "ms": 0.5},
    ]


def test_variant_sizes_keep_the_first_model_of_each_variant() -> None:
    results = [
        bench("m1", Variant.INT8, [1.0], 2_500_000),
        bench("m2", Variant.INT8, [1.0], 9_000_000),
        bench("m1", Variant.FP32, [1.0], 10_000_000),
    ]

    sizes = tables.variant_sizes(results)

    assert sizes.to_dict("records") == [
        {"variant": "int8", "MB": 2.5},
        {"variant": "fp32", "MB": 10.0},
    ]


def test_evaluation_table_leaves_the_reference_agreement_blank_but_numeric() -> None:
    summary = tables.evaluation_table(REPORT)

    assert list(summary["variant"]) == ["fp32", "int8"]
    assert summary["agreement"].dtype == np.float64
    assert math.isnan(summary["agreement"].iloc[0])
    assert summary["agreement"].iloc[1] == 0.8765


def test_pareto_points_take_the_benchmark_latency_of_the_same_model_and_variant() -> None:
    results = [
        bench("fashion", Variant.INT8, [3.0, 1.0, 2.0], 1),  # median 2.0
        bench("other", Variant.FP32, [5.0], 1),  # another model: not used
    ]

    points = tables.pareto_points(REPORT, results)

    assert points.to_dict("records") == [
        {"config": "fashion · fp32", "variant": "fp32", "median ms": 7.5, "accuracy": 0.875},
        {"config": "fashion · int8", "variant": "int8", "median ms": 2.0, "accuracy": 0.75},
    ]


def test_the_confusion_and_per_class_tables_of_a_report() -> None:
    scored = tables.scored_variants(REPORT)

    confusion = tables.confusion_table(REPORT, scored["int8"])
    per_class = tables.per_class_table(REPORT)

    assert list(scored) == ["fp32", "int8"]
    assert list(confusion.columns) == ["true", "predicted", "count"]
    assert len(confusion) == 2 * 3  # two true classes by two classes and "other"
    assert confusion.set_index(["true", "predicted"]).loc[("shirt", "shoe"), "count"] == 1
    assert per_class.to_dict("records") == [
        {"class": "shirt", "fp32": 0.875, "int8": 0.75},
        {"class": "shoe", "fp32": 1.0, "int8": 1.0},
    ]
