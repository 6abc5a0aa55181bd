"""How sure a variant should be: expected calibration error, reliability, and flips by confidence.

Quantization changes confidence as well as answers (calibration worsens with
fewer bits, and low-confidence answers flip first), so an evaluation reports,
per variant and from each image's top-1 class and top-1 probability:

- the expected calibration error (ECE): 15 equal-width bins of top-1
  confidence over [0, 1]; each bin's |accuracy - mean confidence|, weighted by
  its share of the images;
- the reliability diagram's points (each bin's mean confidence and accuracy);
- the share of images whose top-1 differs from the reference variant's, by the
  reference's own confidence.

Written here rather than taken from a library: the formula is five lines of
numpy and the packages that have it (netcal, torchmetrics) would bring a deep
learning framework of their own.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = ["BINS", "CONFIDENCE_BUCKETS", "expected_calibration_error", "flips_by_confidence",
           "reliability"]  # fmt: skip

BINS = 15
CONFIDENCE_BUCKETS = (0.0, 0.5, 0.7, 0.9, 1.0)
"""Edges of the reference's confidence buckets for the flip rate."""


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's bin: (k/bins, (k+1)/bins], with 0 in the first."""
    return np.clip(np.ceil(np.asarray(confidence, np.float64) * bins).astype(int) - 1, 0, bins - 1)


def reliability(
    confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, bins: int = BINS
) -> list[dict[str, float]]:
    """The non-empty bins: their edges, image count, mean confidence and accuracy."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    which = _bin_of(confidence, bins)
    rows = []
    for k in range(bins):
        members = which == k
        if members.any():
            rows.append({
                "low": k / bins,
                "high": (k + 1) / bins,
                "images": int(members.sum()),
                "confidence": float(confidence[members].mean()),
                "accuracy": float(correct[members].mean()),
            })  # fmt: skip
    return rows


def expected_calibration_error(
    confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, bins: int = BINS
) -> float:
    """ECE: the bins' |accuracy - confidence|, weighted by their share of the images."""
    rows = reliability(confidence, correct, bins)
    total = sum(r["images"] for r in rows)
    if not total:
        return 0.0
    return float(sum(r["images"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows))


def flips_by_confidence(
    reference_confidence: np.ndarray,
    reference_top1: np.ndarray,
    top1: np.ndarray,
    edges: Sequence[float] = CONFIDENCE_BUCKETS,
) -> list[dict[str, float]]:
    """Per bucket of the reference's confidence: images and the share whose top-1 differs."""
    reference_confidence = np.asarray(reference_confidence, np.float64)
    flipped = np.asarray(reference_top1) != np.asarray(top1)
    rows = []
    for low, high in itertools.pairwise(edges):
        members = (reference_confidence > low) & (reference_confidence <= high)
        if low == edges[0]:
            members |= reference_confidence == low
        count = int(members.sum())
        rows.append({
            "low": low,
            "high": high,
            "images": count,
            "flip_rate": float(flipped[members].mean()) if count else None,
        })  # fmt: skip
    return rows
