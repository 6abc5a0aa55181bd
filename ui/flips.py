"""The Layers page's flips: which images change their answer, with both top-k and the tensors."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from inference.analysis.layer_report import AnswerChange, TensorError, short_name

TOP_K = 3


def flipped(changes: Sequence[AnswerChange]) -> list[tuple[int, AnswerChange]]:
    """(image index, change) of the images whose top-1 differs."""
    return [(i, c) for i, c in enumerate(changes) if c.flipped]


def flips_caption(changes: Sequence[AnswerChange], reference: str, candidate: str) -> str:
    largest = max(c.largest_change for c in changes)
    return (
        f"{len(flipped(changes))} of {len(changes)} image(s) change their top-1 between "
        f"{reference} and {candidate}; largest probability change {largest:.3f}."
    )


def flips_table(
    flips: Sequence[tuple[int, AnswerChange]],
    names: Sequence[str],
    labels: Sequence[str],
    reference: str,
    candidate: str,
) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "image": names[i],
                reference: labels[int(c.reference.argmax())],
                candidate: labels[int(c.candidate.argmax())],
                "largest Δp": round(c.largest_change, 4),
            }
            for i, c in flips
        ]
    )


def flip_title(name: str, change: AnswerChange, labels: Sequence[str]) -> str:
    before = labels[int(change.reference.argmax())]
    after = labels[int(change.candidate.argmax())]
    return f"{name}: {before} → {after}"


def both_top_k(
    change: AnswerChange, labels: Sequence[str], reference: str, candidate: str, k: int = TOP_K
) -> pd.DataFrame:
    """Each side's top ``k`` classes (the union), with both sides' probabilities."""
    order = change.reference.argsort()[::-1][:k].tolist()
    order += [i for i in change.candidate.argsort()[::-1][:k].tolist() if i not in order]
    return pd.DataFrame(
        {
            "class": [labels[i] for i in order],
            reference: [float(change.reference[i]) for i in order],
            candidate: [float(change.candidate[i]) for i in order],
        }
    ).round(4)


def worst_tensors_table(worst: Sequence[tuple[TensorError, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"#": r.index, "op": r.op, "tensor": short_name(r.tensor), "SNR dB": snr}
            for r, snr in worst
        ]
    ).round(2)
