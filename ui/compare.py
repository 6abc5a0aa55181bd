"""The Compare page's run: every chosen model and variant on the same images, shaped for display."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from inference import ModelSpec
from ui import tables
from ui.resources import ImageInput, get_runners, predict_images, repeat_timings
from ui.widgets import variants_of


@dataclass(frozen=True)
class Comparison:
    """What the Compare page shows."""

    answers: pd.DataFrame
    """One row per image, model and variant (:data:`ui.tables.ANSWER_COLUMNS`)."""
    panels: dict[str, list[tuple[str, pd.DataFrame]]]
    """Per image name: each config's name and its top-k rows, in the order run."""
    latencies: pd.DataFrame
    """One row per timed run (:data:`ui.tables.LATENCY_COLUMNS`)."""


def compare(
    specs: Sequence[ModelSpec],
    variant_names: Sequence[str],
    images: Sequence[ImageInput],
    *,
    runs: int,
    top_k: int,
) -> Comparison:
    """Run each model's chosen variants on ``images``, then time ``runs`` calls per image.

    Results and timings come from the session's store when already measured. A
    model or image that fails is shown as one line and left out (the pages' error policy).
    """
    answers: list[dict[str, object]] = []
    latencies: list[dict[str, object]] = []
    panels: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for spec in specs:
        runners = get_runners(spec, variants_of(spec, variant_names))
        for shown in predict_images(images, spec, runners):
            answers += tables.answer_rows(shown.image.name, spec.name, shown.results)
            for variant, prediction in shown.results.items():
                config = tables.config_name(spec.name, variant)
                single = tables.top_k_rows({variant: prediction}, top_k)
                panels.setdefault(shown.image.name, []).append((config, single))
                timings = repeat_timings(shown, spec, variant, runners[variant], runs)
                latencies += tables.latency_rows(config, variant, timings)
    return Comparison(
        answers=pd.DataFrame(answers, columns=tables.ANSWER_COLUMNS),
        panels=panels,
        latencies=pd.DataFrame(latencies, columns=tables.LATENCY_COLUMNS),
    )
