"""Accuracy-bounded search: keep the worst layers in float until the accuracy drop fits a budget.

Given a labelled set and the largest drop in top-1 accuracy (in points) that
is acceptable against the float model, :func:`search`:

1. measures the float file and the plain quantized variant on the set (one
   pass over it for both);
2. if the drop is too large, ranks the quantized model's tensors by the SNR
   each op loses (:func:`inference.analysis.layer_report.compare_layers` on a few of the
   set's images);
3. keeps the 1, 2, 4, 8, ... worst of them in float (a recipe with
   ``no_quantize`` rules), builds each candidate in the quantizer child and
   measures it, until one fits the budget or every tensor is float.

Each step records the tensors kept in float, accuracy, drop, median latency,
size and build time, so the UI and the CLI can show the whole trade-off.

The set is never held whole: each pass decodes and preprocesses it batch by
batch (:class:`LabelledInputs`) and keeps only the count of right answers; at
most :data:`INPUT_CACHE_BYTES` of preprocessed images are kept between steps,
so memory does not grow with the set (20 000 photos at 224x224 would be 12 GB).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.analysis.benchmark import median_ms
from inference.analysis.evaluate import BATCH_SIZE, LabelledSet
from inference.analysis.layer_report import compare_layers
from inference.core.child_process import Progress
from inference.core.errors import InputError
from inference.core.specs import AnyVariant, ModelSpec, Variant
from inference.engine.convert import ensure_recipe, ensure_variants
from inference.engine.runners import LiteRTRunner, Runner
from inference.formats.images import decode_image, preprocess
from inference.formats.recipes import tensor_regex, variant_recipe
from inference.registry.user_models import recipe_variant_spec

__all__ = ["LabelledInputs", "SearchResult", "SearchStep", "labelled_inputs", "search"]

PROBE_IMAGES = 8
"""Images of the set that rank the tensors (the report costs ~0.4 s per image for Lite0)."""
LATENCY_RUNS = 20
INPUT_CACHE_BYTES = 128_000_000
"""Preprocessed images kept between passes (the set's first ones; the rest is decoded again).

10 000 Fashion-MNIST images (31 MB) are decoded once; of 224x224 photos, the first ~200.
"""


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


class LabelledInputs:
    """A labelled set's readable images, preprocessed a batch at a time, never all at once.

    Each pass (:meth:`batches`) yields ``(inputs, labels)`` batches of at most
    :data:`~inference.analysis.evaluate.BATCH_SIZE` images; unreadable images are
    skipped (:func:`~inference.analysis.evaluate.evaluate` reports them). Batches are
    kept for the next pass while they fit ``cache_bytes``; the rest is decoded
    again each time.
    """

    def __init__(
        self,
        spec: ModelSpec,
        dataset: LabelledSet,
        *,
        batch_size: int = BATCH_SIZE,
        cache_bytes: int | None = None,
    ) -> None:
        self.spec = spec
        self.dataset = dataset
        self.batch_size = batch_size
        self.cache_bytes = INPUT_CACHE_BYTES if cache_bytes is None else cache_bytes
        self._cached: list[tuple[np.ndarray, np.ndarray]] = []
        self._cached_bytes = 0
        self._resume = 0
        """Index in the set where the cached batches end."""
        self._caching = True

    def _read(self, start: int) -> tuple[np.ndarray, np.ndarray] | None:
        pre = self.spec.preprocessing
        inputs, labels = [], []
        for item in self.dataset.images[start : start + self.batch_size]:
            try:
                image = decode_image(item.source, name=item.name, color_mode=pre.color_mode)
            except InputError:
                continue  # evaluate() reports unreadable images; the search just skips them
            inputs.append(preprocess(image, pre)[0])
            labels.append(item.label)
        if not inputs:
            return None
        return np.stack(inputs), np.asarray(labels)

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over every readable image, in the set's order."""
        yield from self._cached
        for start in range(self._resume, len(self.dataset.images), self.batch_size):
            batch = self._read(start)
            if self._caching and start == self._resume:
                size = 0 if batch is None else batch[0].nbytes
                if self._cached_bytes + size <= self.cache_bytes:
                    if batch is not None:
                        self._cached.append(batch)
                        self._cached_bytes += size
                    self._resume = start + self.batch_size
                else:
                    self._caching = False
            if batch is not None:
                yield batch

    def first(self, count: int) -> list[np.ndarray]:
        """The first ``count`` readable images, each ``(1, H, W, C)``, decoded on their own.

        Raises:
            InputError: None of the images can be read.
        """
        pre = self.spec.preprocessing
        found: list[np.ndarray] = []
        for item in self.dataset.images:
            if len(found) == count:
                break
            try:
                image = decode_image(item.source, name=item.name, color_mode=pre.color_mode)
            except InputError:
                continue
            found.append(preprocess(image, pre))
        if not found:
            raise InputError("none of the labelled images could be read")
        return found


def labelled_inputs(spec: ModelSpec, dataset: LabelledSet) -> tuple[np.ndarray, np.ndarray]:
    """Every readable image of a *small* set in one array: ``(N, H, W, C)`` and labels.

    For a few hundred images (tests, calibration); the search itself streams
    (:class:`LabelledInputs`).

    Raises:
        InputError: None of the images can be read.
    """
    batches = list(LabelledInputs(spec, dataset, cache_bytes=0).batches())
    if not batches:
        raise InputError("none of the labelled images could be read")
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _accuracies(runners: Sequence[Runner], inputs: LabelledInputs) -> tuple[list[float], int]:
    """Top-1 accuracy of each runner on one pass over the set, and the images scored."""
    right = [0] * len(runners)
    scored = 0
    for batch, labels in inputs.batches():
        for i, runner in enumerate(runners):
            right[i] += int(np.count_nonzero(runner.predict(batch).argmax(axis=1) == labels))
        scored += len(labels)
    if not scored:
        raise InputError("none of the labelled images could be read")
    return [r / scored for r in right], scored


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
    inputs = LabelledInputs(spec, dataset)
    probe = inputs.first(PROBE_IMAGES)  # also fails early when no image can be read
    float_file = ensure_variants(spec, [Variant.FP32], progress=progress)[Variant.FP32]
    float_accuracy = 0.0
    images = 0
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
        with LiteRTRunner(made, made.variants[0], path) as runner:
            if not steps:  # the plain variant: scored in the same pass as the float file
                with LiteRTRunner(spec, Variant.FP32, float_file) as float_runner:
                    (float_accuracy, accuracy), images = _accuracies([float_runner, runner], inputs)
            else:
                (accuracy,), _ = _accuracies([runner], inputs)
            step = SearchStep(
                kept=tuple(order[:count]),
                accuracy=accuracy,
                drop_points=(float_accuracy - accuracy) * 100,
                median_ms=median_ms(runner, probe[0], LATENCY_RUNS),
                size_bytes=path.stat().st_size,
                build_seconds=built,
                path=path,
            )
        steps.append(step)
        if on_step:
            on_step(step)
        if step.drop_points <= max_drop:
            return SearchResult(float_accuracy, max_drop, images, tuple(steps), step)
        if not order:
            report = compare_layers(float_file, path, probe)
            # Where damage is made, not where it shows: see FloatSelection.
            order = [record.tensor for record in report.most_damaging(len(report.records))]
        if count >= len(order):
            return SearchResult(float_accuracy, max_drop, images, tuple(steps), None)
        count = min(len(order), max(1, count * 2))
