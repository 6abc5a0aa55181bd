"""Accuracy-bounded search: keep the worst layers in float until the accuracy drop fits a budget.

Given a labelled set and the largest drop in top-1 accuracy (in points) that
is acceptable against the float model, :func:`search`:

1. measures the float file and the plain quantized variant on the set;
2. if the drop is too large, ranks the quantized model's tensors by the SNR
   each op loses (:func:`inference.layers.compare_layers` on a few of the
   set's images);
3. keeps the 1, 2, 4, 8, ... worst of them in float (a recipe with
   ``no_quantize`` rules), builds each candidate in the quantizer child and
   measures it, until one fits the budget or every tensor is float.

Each step records the tensors kept in float, accuracy, drop, median latency,
size and build time, so the UI and the CLI can show the whole trade-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.benchmark import median_ms
from inference.child import Progress
from inference.convert import ensure_recipe, ensure_variants
from inference.custom import recipe_variant_spec
from inference.errors import InputError
from inference.evaluate import LabelledSet
from inference.layers import compare_layers
from inference.preprocess import decode_image, preprocess
from inference.recipes import tensor_regex, variant_recipe
from inference.runners import LiteRTRunner, Runner
from inference.specs import AnyVariant, ModelSpec, Variant

__all__ = ["SearchResult", "SearchStep", "labelled_inputs", "search"]

PROBE_IMAGES = 8
"""Images of the set that rank the tensors (the report costs ~0.4 s per image for Lite0)."""
LATENCY_RUNS = 20


@dataclass(frozen=True)
class SearchStep:
    """One candidate: which tensors stayed float, and what it costs and gives."""

    kept: tuple[str, ...]
    accuracy: float
    drop_points: float
    median_ms: float
    size_bytes: int
    build_seconds: float
    path: Path

    def as_dict(self) -> dict[str, object]:
        return {
            "kept_float": len(self.kept),
            "tensors": list(self.kept),
            "accuracy": round(self.accuracy, 6),
            "drop_points": round(self.drop_points, 4),
            "median_ms": round(self.median_ms, 3),
            "size_bytes": self.size_bytes,
            "build_seconds": round(self.build_seconds, 2),
            "path": str(self.path),
        }


@dataclass(frozen=True)
class SearchResult:
    float_accuracy: float
    max_drop: float
    images: int
    steps: tuple[SearchStep, ...]
    chosen: SearchStep | None
    """The first step within the budget; ``None`` when even all-float tensors did not fit."""


def labelled_inputs(spec: ModelSpec, dataset: LabelledSet) -> tuple[np.ndarray, np.ndarray]:
    """Every readable image of the set, preprocessed once: ``(N, H, W, C)`` and labels."""
    inputs, labels = [], []
    for item in dataset.images:
        try:
            image = decode_image(
                item.source, name=item.name, color_mode=spec.preprocessing.color_mode
            )
        except InputError:
            continue  # evaluate() reports unreadable images; the search just skips them
        inputs.append(preprocess(image, spec.preprocessing)[0])
        labels.append(item.label)
    if not inputs:
        raise InputError("none of the labelled images could be read")
    return np.stack(inputs), np.asarray(labels)


def _accuracy(runner: Runner, inputs: np.ndarray, labels: np.ndarray) -> float:
    predictions = np.concatenate(
        [runner.predict(inputs[i : i + 256]).argmax(axis=1) for i in range(0, len(inputs), 256)]
    )
    return float(np.mean(predictions == labels))


def search(
    spec: ModelSpec,
    dataset: LabelledSet,
    *,
    max_drop: float = 0.5,
    variant: AnyVariant = Variant.INT8,
    on_step: Callable[[SearchStep], None] | None = None,
    progress: Progress | None = None,
) -> SearchResult:
    """Keep the worst tensors of ``variant`` in float until the drop fits ``max_drop`` points.

    Raises:
        InputError: The variant is not made by a recipe, or no image can be read.
    """
    if not variant.is_quantized:
        raise InputError(f"expected a quantized variant to search from; received {variant.value!r}")
    inputs, labels = labelled_inputs(spec, dataset)
    float_file = ensure_variants(spec, [Variant.FP32], progress=progress)[Variant.FP32]
    float_accuracy = _accuracy(LiteRTRunner(spec, Variant.FP32, float_file), inputs, labels)
    base = variant_recipe(variant)
    steps: list[SearchStep] = []
    order: list[str] = []
    count = 0
    while True:
        recipe = base.keeping_float(tuple(tensor_regex(t) for t in order[:count]))
        start = time.perf_counter()
        path = ensure_recipe(spec, recipe, progress=progress)
        built = time.perf_counter() - start
        made = recipe_variant_spec(spec, path, recipe.name)
        runner = LiteRTRunner(made, made.variants[0], path)
        accuracy = _accuracy(runner, inputs, labels)
        step = SearchStep(
            kept=tuple(order[:count]),
            accuracy=accuracy,
            drop_points=(float_accuracy - accuracy) * 100,
            median_ms=median_ms(runner, inputs[:1], LATENCY_RUNS),
            size_bytes=path.stat().st_size,
            build_seconds=built,
            path=path,
        )
        runner.close()
        steps.append(step)
        if on_step:
            on_step(step)
        if step.drop_points <= max_drop:
            return SearchResult(float_accuracy, max_drop, len(labels), tuple(steps), step)
        if not order:
            probe = [inputs[i : i + 1] for i in range(min(PROBE_IMAGES, len(inputs)))]
            report = compare_layers(float_file, path, probe)
            # Where damage is made, not where it shows: see FloatSelection.
            order = [record.tensor for record in report.most_damaging(len(report.records))]
        if count >= len(order):
            return SearchResult(float_accuracy, max_drop, len(labels), tuple(steps), None)
        count = min(len(order), max(1, count * 2))
