"""Tidy DataFrames built from predictions, benchmarks and evaluations, for the pages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from inference import Category, Prediction, Variant

if TYPE_CHECKING:
    from inference.analysis.benchmark import BenchResult
    from inference.analysis.evaluate import Evaluation
    from inference.analysis.robustness import Robustness
    from inference.core.specs import AnyVariant

ANSWER_COLUMNS = [
    "image",
    "model",
    "variant",
    "config",
    "top-1",
    "score",
    "inference ms",
    "cell",
]
"""The Compare page's answers: one row per image, model and variant."""
LATENCY_COLUMNS = ["config", "variant", "ms"]
"""One timed run per row, for :func:`ui.charts.latency_spread_chart`."""


def config_name(model: str, variant: AnyVariant) -> str:
    """How one model variant is named in charts and tables: ``efficientnet_lite0 · int8``."""
    return f"{model} · {variant.value}"


def reference_variant(variants: Sequence[Variant]) -> Variant:
    """The variant others are compared with: the original if present, else the first."""
    return Variant.ORIGINAL if Variant.ORIGINAL in variants else variants[0]


def reference_top(predictions: Mapping[AnyVariant, Prediction]) -> Category:
    """The reference variant's best class: what a page headlines an image with."""
    return predictions[reference_variant(list(predictions))].top_k[0]


def top_k_rows(predictions: Mapping[Variant, Prediction], k: int) -> pd.DataFrame:
    """Each variant's probability for the reference variant's top-k classes."""
    reference = predictions[reference_variant(list(predictions))]
    classes = reference.top_k[:k]
    rows = [
        {
            "label": category.label,
            "variant": variant.value,
            "probability": float(prediction.probabilities[category.index]),
        }
        for variant, prediction in predictions.items()
        for category in classes
    ]
    return pd.DataFrame(rows, columns=["label", "variant", "probability"])


def variant_table(
    predictions: Mapping[Variant, Prediction],
    sizes: Mapping[Variant, int],
    labels: Sequence[str],
) -> pd.DataFrame:
    """Top-1, agreement and largest probability change per variant, against the reference."""
    reference_key = reference_variant(list(predictions))
    reference = predictions[reference_key]
    rows = []
    for variant, prediction in predictions.items():
        top = prediction.top_k[0]
        change = np.abs(prediction.probabilities - reference.probabilities)
        worst = int(np.argmax(change))
        rows.append(
            {
                "variant": variant.value,
                "top-1": top.label,
                "score": top.score,
                f"same top-1 as {reference_key.value}": top.index == reference.top_k[0].index,
                "largest Δp": float(change[worst]),
                "Δp class": "" if variant is reference_key else labels[worst],
                "inference ms": prediction.timing.inference,
                "total ms": prediction.timing.total,
                "size MB": sizes.get(variant, 0) / 1e6,
            }
        )
    return pd.DataFrame(rows)


def stage_rows(predictions: Mapping[Variant, Prediction]) -> pd.DataFrame:
    rows = [
        {"variant": variant.value, "stage": stage, "ms": ms}
        for variant, prediction in predictions.items()
        for stage, ms in (
            ("decode", prediction.timing.decode),
            ("preprocess", prediction.timing.preprocess),
            ("inference", prediction.timing.inference),
        )
    ]
    return pd.DataFrame(rows, columns=["variant", "stage", "ms"])


def results_table(predictions: Sequence[Prediction]) -> pd.DataFrame:
    """One row per image and variant: the several-images summary and its CSV."""
    return pd.DataFrame(
        [
            {
                "image": p.image,
                "model": p.model,
                "variant": p.variant.value,
                "top-1": p.top_k[0].label,
                "score": round(p.top_k[0].score, 4),
                "inference ms": round(p.timing.inference, 2),
                "total ms": round(p.timing.total, 2),
            }
            for p in predictions
        ],
        columns=["image", "model", "variant", "top-1", "score", "inference ms", "total ms"],
    )


def answer_rows(
    image: str, model: str, predictions: Mapping[AnyVariant, Prediction]
) -> list[dict[str, object]]:
    """One image's answers from one model, a row per variant (:data:`ANSWER_COLUMNS`).

    ``image`` is the name the page shows; a stored result may carry the name the same
    content had when it was first classified.
    """
    rows: list[dict[str, object]] = []
    for variant, prediction in predictions.items():
        top = prediction.top_k[0]
        rows.append(
            {
                "image": image,
                "model": model,
                "variant": variant.value,
                "config": config_name(model, variant),
                "top-1": top.label,
                "score": round(top.score, 4),
                "inference ms": round(prediction.timing.inference, 2),
                "cell": f"{top.label}, {prediction.timing.inference:.1f} ms",
            }
        )
    return rows


def answer_grid(answers: pd.DataFrame) -> pd.DataFrame:
    """Rows: images; columns: configs; cells: top-1 and time, both in the order first seen."""
    grid = answers.pivot(index="image", columns="config", values="cell")
    return grid.loc[list(dict.fromkeys(answers["image"])), list(dict.fromkeys(answers["config"]))]


def answers_csv(answers: pd.DataFrame) -> bytes:
    """The answers as CSV, without the grid's display cell."""
    return answers.drop(columns=["cell"]).to_csv(index=False).encode()


def latency_rows(
    config: str, variant: AnyVariant, samples_ms: Iterable[float]
) -> list[dict[str, object]]:
    """One row per timed run (:data:`LATENCY_COLUMNS`)."""
    return [{"config": config, "variant": variant.value, "ms": ms} for ms in samples_ms]


def benchmark_table(results: Sequence[BenchResult]) -> pd.DataFrame:
    """One row per benchmarked model variant: the table and its CSV."""
    return pd.DataFrame([r.as_row() for r in results])


def benchmark_samples(results: Sequence[BenchResult]) -> pd.DataFrame:
    """Every timed run of every result (:data:`LATENCY_COLUMNS`), for the latency spread."""
    return pd.DataFrame(
        [
            row
            for r in results
            for row in latency_rows(config_name(r.model, r.variant), r.variant, r.samples_ms)
        ]
    )


def variant_sizes(results: Sequence[BenchResult]) -> pd.DataFrame:
    """File size per variant, in MB; a variant measured for several models keeps the first."""
    return pd.DataFrame(
        [{"variant": r.variant.value, "MB": r.size_bytes / 1e6} for r in results]
    ).drop_duplicates("variant")


def evaluation_table(report: Evaluation) -> pd.DataFrame:
    """Accuracy, top-5, agreement and median latency per variant."""
    summary = pd.DataFrame([s.as_row() for s in report.scores])
    summary["agreement"] = pd.to_numeric(summary["agreement"])  # the reference row: blank
    return summary


def reliability_points(report: Evaluation) -> pd.DataFrame:
    """The reliability diagram's points: per variant and confidence bin, confidence and accuracy."""
    return pd.DataFrame(
        [
            {"variant": name, **row}
            for name, found in report.calibration().items()
            for row in found["reliability"]
        ]
    )


def flip_rates(report: Evaluation) -> pd.DataFrame:
    """Per variant (rows): how often top-1 differs from the reference's, by its confidence.

    Each column is a bucket of the reference's top-1 confidence, named with its
    image count; empty buckets are left out.
    """
    rows = []
    for name, found in report.calibration().items():
        row: dict[str, object] = {"variant": name}
        for bucket in found["flips_by_reference_confidence"] or []:
            if bucket["images"]:
                label = f"{bucket['low']:.1f}-{bucket['high']:.1f} ({bucket['images']})"
                row[label] = round(bucket["flip_rate"], 4)
        if len(row) > 1:
            rows.append(row)
    return pd.DataFrame(rows)


def pareto_points(report: Evaluation, results: Sequence[BenchResult]) -> pd.DataFrame:
    """Latency against accuracy per evaluated variant.

    The latency is the benchmark's median when the same model and variant was
    benchmarked (timed runs on one photo), else the evaluation's own median.
    """
    latency = {(r.model, r.variant): r.latency.median for r in results}
    return pd.DataFrame(
        [
            {
                "config": config_name(report.model, s.variant),
                "variant": s.variant.value,
                "median ms": latency.get((report.model, s.variant), s.median_ms),
                "accuracy": s.accuracy,
            }
            for s in report.scores
        ]
    )


def scored_variants(report: Evaluation) -> dict[str, AnyVariant]:
    """The evaluated variants by name, in the report's order."""
    return {s.variant.value: s.variant for s in report.scores}


def confusion_table(report: Evaluation, variant: AnyVariant) -> pd.DataFrame:
    """Long-form confusion matrix of one variant: true, predicted, count."""
    return pd.DataFrame(report.confusion_rows(variant))


def per_class_table(report: Evaluation) -> pd.DataFrame:
    """Accuracy per true class (rows) and variant (columns)."""
    return pd.DataFrame(report.per_class_rows())


def robustness_points(report: Robustness) -> pd.DataFrame:
    """Accuracy per variant, corruption and severity; the clean images as severity 0 of each."""
    clean = {r.variant: r for r in report.records if r.severity == 0}
    rows = []
    for record in report.records:
        if record.severity == 0:
            continue
        rows.append(record.as_dict())
        base = clean.get(record.variant)
        if base is not None:
            rows.append({**base.as_dict(), "corruption": record.corruption})
    frame = pd.DataFrame(rows, columns=["variant", "corruption", "severity", "accuracy",
                                        "agreement", "images"])  # fmt: skip
    return frame.drop_duplicates(["variant", "corruption", "severity"]).reset_index(drop=True)


def robustness_records(report: Robustness) -> pd.DataFrame:
    """The run's records as they are: variant, corruption (``clean``), severity, accuracy, ..."""
    return pd.DataFrame([record.as_dict() for record in report.records])


def mce_table(report: Robustness) -> pd.DataFrame:
    """Per variant: mCE and relative mCE against the baseline, then each corruption's CE."""
    rows = []
    for variant, found in report.mce().items():
        row: dict[str, object] = {
            "variant": variant,
            "mCE": _rounded(found["mce"]),
            "relative mCE": _rounded(found["relative_mce"]),
        }
        row.update({f"CE {name}": _rounded(value) for name, value in found["ce"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _rounded(value: object, digits: int = 3) -> object:
    return round(value, digits) if isinstance(value, float) else value
