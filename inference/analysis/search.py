"""Accuracy-bounded search: the smallest file whose accuracy drop fits a budget.

Given a labelled set and the largest drop in top-1 accuracy (in points) that
is acceptable against the float model, :func:`search`:

1. measures the float file and the plain quantized variant on the set (one
   pass over it for both);
2. if the drop is too large, orders the ops by the damage they make: the
   sensitivity scan's ranking when one is given, else each op's own error
   (:func:`inference.analysis.layer_report.compare_layers` on a few of the
   set's images);
3. keeps the 1, 2, 4, 8, ... most damaging in float (``no_quantize`` rules),
   building and measuring each candidate, until one fits; then bisects between
   the last count that did not fit and the first that did, since fewer float
   ops make a smaller file;
4. returns the smallest file among the steps that fit, or none.

Drops are compared as counts of images, never as floats: a budget of 0.05
points on 2 000 images allows exactly one image (0.05 % of 2 000), and a step
that loses one image fits it.

Each step records the tensors kept in float, accuracy, drop, median latency,
size and build time, so the UI and the CLI can show the whole trade-off.

The set is never held whole: each pass decodes and preprocesses it batch by
batch (:class:`LabelledInputs`) and keeps only the count of right answers; at
most :data:`INPUT_CACHE_BYTES` of preprocessed images are kept between steps,
so memory does not grow with the set (20 000 photos at 224x224 would be 12 GB).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.analysis.answers import run_answers
from inference.analysis.benchmark import median_ms
from inference.analysis.evaluate import BATCH_SIZE, LabelledSet
from inference.analysis.layer_report import compare_layers
from inference.core.child_process import Progress
from inference.core.errors import InputError
from inference.core.specs import AnyVariant, ModelSpec, RecipeVariant, Variant
from inference.engine.convert import ensure_recipe, ensure_variants
from inference.engine.runners import LiteRTRunner
from inference.engine.shards import Engine, batched, prepare
from inference.formats.datasets import Shard
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
    lost_images: int = 0
    """Images the float model gets right and this step does not, net (the drop, counted)."""
    fits: bool = False
    """Whether :attr:`lost_images` is within the budget."""

    def as_dict(self) -> dict[str, object]:
        return {
            "kept_float": len(self.kept),
            "tensors": list(self.kept),
            "accuracy": round(self.accuracy, 6),
            "drop_points": round(self.drop_points, 4),
            "lost_images": self.lost_images,
            "fits": self.fits,
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
    """The smallest file among the steps within the budget; ``None`` when none fit."""
    allowed_images: int = 0
    """The budget as a count: ``floor(max_drop / 100 * images)``."""
    ranked_by: str = "own error"
    """What ordered the ops: ``"own error"`` or ``"sensitivity scan"``."""

    def as_dict(self) -> dict[str, object]:
        return {
            "float_accuracy": round(self.float_accuracy, 6),
            "max_drop": self.max_drop,
            "images": self.images,
            "allowed_images": self.allowed_images,
            "ranked_by": self.ranked_by,
            "steps": [step.as_dict() for step in self.steps],
            "chosen": None if self.chosen is None else str(self.chosen.path),
            "chosen_step": None if self.chosen is None else self.chosen.as_dict(),
        }


def allowed_images(max_drop: float, images: int) -> int:
    """The most images a step may lose: ``max_drop`` points of ``images``, rounded down.

    The tiny epsilon keeps ``0.05 % of 2 000`` at 1 despite binary floating point.
    """
    return math.floor(max_drop / 100.0 * images + 1e-9)


class LabelledInputs:
    """A labelled set's readable images, preprocessed a batch at a time, never all at once.

    Each pass (:meth:`batches`) yields ``(inputs, labels)`` batches of at most
    :data:`~inference.analysis.evaluate.BATCH_SIZE` images; unreadable images are
    skipped (:func:`~inference.analysis.evaluate.evaluate` reports them). The first
    shards' batches are kept for the next pass while they fit ``cache_bytes``; the
    other shards are read and decoded again each time.
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
        # Shards of one batch where the listing allows it: the cache keeps whole shards.
        self.dataset = dataset.with_shard_size(batch_size)
        self.batch_size = batch_size
        self.cache_bytes = INPUT_CACHE_BYTES if cache_bytes is None else cache_bytes
        self._cached: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._cached_bytes = 0
        self._caching = True

    def _read(self, shard: Shard) -> list[tuple[np.ndarray, np.ndarray]]:
        found = []
        for items in batched(self.dataset.read(shard), self.batch_size):
            prepared = prepare(items, self.spec)  # unreadable images: evaluate() reports them
            if len(prepared.labels):
                found.append((prepared.inputs, prepared.labels.astype(np.int64)))
        return found

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over every readable image, in the set's order."""
        for shard in self.dataset.shards:
            if shard.index in self._cached:
                yield from self._cached[shard.index]
                continue
            found = self._read(shard)
            if self._caching:
                size = sum(inputs.nbytes for inputs, _ in found)
                if self._cached_bytes + size <= self.cache_bytes:
                    self._cached[shard.index] = found
                    self._cached_bytes += size
                else:
                    self._caching = False  # only a prefix is kept: later passes read the rest
            yield from found

    def first(self, count: int) -> list[np.ndarray]:
        """The first ``count`` readable images, each ``(1, H, W, C)``, decoded on their own.

        Raises:
            InputError: None of the images can be read.
        """
        found: list[np.ndarray] = []
        for shard in self.dataset.shards:
            for item in self.dataset.read(shard):
                if len(found) == count:
                    break
                prepared = prepare([item], self.spec)
                if len(prepared.labels):
                    found.append(prepared.inputs)
            if len(found) == count:
                break
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


def _correct(
    runners: Sequence[LiteRTRunner], inputs: LabelledInputs, engine: Engine | None = None
) -> tuple[list[int], int]:
    """Images each runner gets right on one pass over the set, and the images scored.

    In this process the preprocessed inputs kept between steps are reused; on a
    pool or a cluster the workers read the set and get the runners' files.
    """
    if engine is not None and engine.kind != "process":
        files = [(runner.variant, str(runner.path)) for runner in runners]
        answers = run_answers(inputs.spec, inputs.dataset, files=files, engine=engine).ordered()
        if not len(answers.labels):
            raise InputError("none of the labelled images could be read")
        right = [
            int(np.count_nonzero(answers.top[r.variant.value][:, 0] == answers.labels))
            for r in runners
        ]
        return right, len(answers.labels)
    right = [0] * len(runners)
    scored = 0
    for batch, labels in inputs.batches():
        for i, runner in enumerate(runners):
            right[i] += int(np.count_nonzero(runner.predict(batch).argmax(axis=1) == labels))
        scored += len(labels)
    if not scored:
        raise InputError("none of the labelled images could be read")
    return right, scored


def search(
    spec: ModelSpec,
    dataset: LabelledSet,
    *,
    max_drop: float = 0.5,
    variant: AnyVariant = Variant.INT8,
    ranking: Sequence[str] | None = None,
    on_step: Callable[[SearchStep], None] | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> SearchResult:
    """The smallest file of ``variant`` with some ops in float whose drop fits ``max_drop`` points.

    Args:
        spec: The model.
        dataset: The labelled set every step is measured on.
        max_drop: The budget, in points of top-1 accuracy against the float file.
        variant: The quantized variant to start from (its recipe).
        ranking: Tensors in the order to keep them in float, most damaging first
            (a sensitivity scan's); default: each op's own error on a few images.
        on_step: Called with each measured step.
        progress: Called with (message, fraction) while files are built.
        engine: Where each step's pass over the set runs (default: this process,
            which keeps preprocessed images between steps).

    Raises:
        InputError: The variant is not made by a recipe, or no image can be read.
    """
    if not variant.is_quantized:
        raise InputError(f"expected a quantized variant to search from; received {variant.value!r}")
    inputs = LabelledInputs(spec, dataset)
    image_bytes = 4 * math.prod(spec.preprocessing.input_shape)
    fits_here = dataset.count is not None and dataset.count * image_bytes <= inputs.cache_bytes
    if engine is not None and engine.kind == "pool" and fits_here:
        engine = None  # the whole set stays preprocessed here: faster than workers decoding
    probe = inputs.first(PROBE_IMAGES)  # also fails early when no image can be read
    float_file = ensure_variants(spec, [Variant.FP32], progress=progress)[Variant.FP32]
    base = variant_recipe(variant)
    # A saved recipe variant was calibrated on its own images: every step is too, so the
    # plain step is the very file the variant names.
    calibration = (
        [Path(p) for p in variant.calibration]
        if isinstance(variant, RecipeVariant) and variant.calibration
        else None
    )
    float_correct = images = allowed = 0
    order: list[str] = list(ranking or [])
    steps: dict[int, SearchStep] = {}

    def measure(count: int) -> SearchStep:
        nonlocal float_correct, images, allowed
        kept = tuple(order[:count])
        recipe = base.keeping_float(tuple(tensor_regex(t) for t in kept))
        start = time.perf_counter()
        path = ensure_recipe(spec, recipe, progress=progress, calibration=calibration)
        built = time.perf_counter() - start
        made = recipe_variant_spec(spec, path, recipe.name)
        with LiteRTRunner(made, made.variants[0], path) as runner:
            if not steps:  # the plain variant: scored in the same pass as the float file
                with LiteRTRunner(spec, Variant.FP32, float_file) as float_runner:
                    pair = [float_runner, runner]
                    (float_correct, correct), images = _correct(pair, inputs, engine)
                allowed = allowed_images(max_drop, images)
            else:
                (correct,), _ = _correct([runner], inputs, engine)
            lost = float_correct - correct
            step = SearchStep(
                kept=kept,
                accuracy=correct / images,
                drop_points=lost / images * 100,
                median_ms=median_ms(runner, probe[0], LATENCY_RUNS),
                size_bytes=path.stat().st_size,
                build_seconds=built,
                path=path,
                lost_images=lost,
                fits=lost <= allowed,
            )
        steps[count] = step
        if on_step:
            on_step(step)
        return step

    def result() -> SearchResult:
        fitting = [step for step in steps.values() if step.fits]
        chosen = min(fitting, key=lambda s: (s.size_bytes, len(s.kept))) if fitting else None
        return SearchResult(
            float_accuracy=float_correct / images,
            max_drop=max_drop,
            images=images,
            steps=tuple(steps[count] for count in sorted(steps)),
            chosen=chosen,
            allowed_images=allowed,
            ranked_by="sensitivity scan" if ranking else "own error",
        )

    if measure(0).fits:
        return result()
    if not order:
        report = compare_layers(float_file, steps[0].path, probe)
        # Where damage is made, not where it shows: each op's own error, carried on.
        order = [record.tensor for record in report.most_damaging(len(report.records))]
    failing, count = 0, 1
    while not measure(count).fits:
        if count >= len(order):
            return result()  # even every ranked op in float does not fit
        failing, count = count, min(len(order), count * 2)
    while count - failing > 1:  # fewer ops in float: a smaller file that may still fit
        middle = (failing + count) // 2
        if measure(middle).fits:
            count = middle
        else:
            failing = middle
    return result()
