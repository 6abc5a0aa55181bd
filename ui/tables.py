"""Tidy DataFrames built from predictions, for the charts and tables of the pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from inference import Prediction, Variant


def reference_variant(variants: Sequence[Variant]) -> Variant:
    """The variant others are compared with: the original if present, else the first."""
    return Variant.ORIGINAL if Variant.ORIGINAL in variants else variants[0]


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
