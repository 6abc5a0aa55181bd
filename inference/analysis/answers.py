"""Answers gathered from shard results: each image's top-5 and confidence, put in the set's order.

An engine (:mod:`inference.engine.executors`) yields shard results in any order,
from any process or node; :class:`Answers` collects them without holding images
and :meth:`Answers.ordered` sorts them by (shard, offset), so the same set gives
the same answers on every engine. :func:`run_conditions` runs several conditions
of a set (a robustness run's corruptions) in one engine run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from inference.core.errors import InputError
from inference.core.specs import AnyVariant, ModelSpec
from inference.engine.executors import InProcess
from inference.engine.runners import Runner
from inference.engine.shards import Engine, ShardJob, ShardResult
from inference.formats.corruptions import Corruption
from inference.formats.labelled import IMAGES_PER_SHARD, LabelledSet

__all__ = ["Answers", "Ordered", "run_answers", "run_conditions", "shard_size"]


@dataclass
class Answers:
    """Shard results gathered into per-image answers as they arrive, then put in order.

    Holds :data:`~inference.engine.shards.TOP` class indices (int16) and one
    confidence per image and variant: 1 million images x 7 variants is 84 MB,
    never the images themselves.
    """

    keys: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    top: dict[str, list[np.ndarray]] = field(default_factory=dict)
    confidence: dict[str, list[np.ndarray]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage, summed over every worker."""
    nodes: dict[str, int] = field(default_factory=dict)
    """Images each node (or process) answered."""
    per_image_ms: dict[str, list[float]] = field(default_factory=dict)
    count: int = 0
    tensorflow_on_workers: bool = False

    def add(self, result: ShardResult) -> None:
        self.problems.extend(result.problems)
        for stage, spent in result.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + spent
        self.tensorflow_on_workers |= result.tensorflow_loaded
        if not result.images:
            return
        self.count += result.images
        self.nodes[result.node] = self.nodes.get(result.node, 0) + result.images
        self.keys.append(result.shards.astype(np.int64) << 32 | result.offsets.astype(np.int64))
        self.labels.append(result.labels)
        for name, top in result.top.items():
            self.top.setdefault(name, []).append(top)
            self.confidence.setdefault(name, []).append(result.confidence[name])
            spent = result.seconds.get(f"inference {name}", 0.0)
            self.per_image_ms.setdefault(name, []).append(spent * 1e3 / result.images)

    def ordered(self) -> Ordered:
        """The answers sorted by image: (shard, offset) order, whatever order they came in."""
        keys = np.concatenate(self.keys)
        order = np.argsort(keys, kind="stable")
        return Ordered(
            keys=keys[order],
            labels=np.concatenate(self.labels)[order],
            top={n: np.concatenate(rows)[order] for n, rows in self.top.items()},
            confidence={n: np.concatenate(rows)[order] for n, rows in self.confidence.items()},
        )


@dataclass(frozen=True)
class Ordered:
    keys: np.ndarray
    """``shard << 32 | offset`` of each image, ascending."""
    labels: np.ndarray
    top: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]

    def joined(self, other: Ordered) -> Ordered:
        """Another run's variants on the same images, side by side with these.

        Raises:
            InputError: The runs read different images.
        """
        if not np.array_equal(self.keys, other.keys):
            raise InputError("the two runs read different images; did the set change?")
        return Ordered(self.keys, self.labels, {**self.top, **other.top},
                       {**self.confidence, **other.confidence})  # fmt: skip


def shard_size(count: int | None, workers: int) -> int:
    """Images per shard: four shards per worker, 16 to 256 images each."""
    if count is None:
        return IMAGES_PER_SHARD
    return int(min(IMAGES_PER_SHARD, max(16, -(-count // (4 * workers)))))


def run_answers(
    spec: ModelSpec,
    dataset: LabelledSet,
    *,
    files: Sequence[tuple[AnyVariant, str]] = (),
    runners: Mapping[AnyVariant, Runner] | None = None,
    engine: Engine | None = None,
    progress: Callable[[str, float], None] | None = None,
    corruption: Corruption | None = None,
) -> Answers:
    """Every readable image of ``dataset`` through the variants, on ``engine``.

    ``files`` are ``.tflite`` paths any engine can load; ``runners`` are loaded
    ones that an in-process engine reuses.

    Raises:
        InputError: A set held in memory (an upload) on an engine other than this process.
    """
    return run_conditions(
        spec, dataset, (corruption,), files=files, runners=runners, engine=engine,
        progress=progress,
    )[corruption]  # fmt: skip


def run_conditions(
    spec: ModelSpec,
    dataset: LabelledSet,
    conditions: Sequence[Corruption | None],
    *,
    files: Sequence[tuple[AnyVariant, str]] = (),
    runners: Mapping[AnyVariant, Runner] | None = None,
    engine: Engine | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> dict[Corruption | None, Answers]:
    """:func:`run_answers` for several conditions of the set in one engine run.

    Every condition's shards go to the engine at once: a pool's workers never wait
    at a condition's end, and a Ray cluster starts its actors once.
    """
    engine = engine or InProcess(dataset.read)
    if engine.kind == "process":
        engine = InProcess(dataset.read)
    elif not dataset.portable:
        raise InputError(
            f"{dataset.name}: an uploaded archive is read in this process only; "
            "save it to a folder the workers can read"
        )
    answers = {c: Answers(problems=list(dataset.problems)) for c in conditions}
    jobs = [
        ShardJob(spec, shard, tuple(files), threads=engine.threads, corruption=condition)
        for condition in conditions
        for shard in dataset.shards
    ]
    total = dataset.count * len(conditions) if dataset.count else None
    seen = 0
    for result in engine.run(jobs, runners):
        answers[result.corruption].add(result)
        seen += result.images + len(result.problems)
        if progress:
            shown = f"{seen}/{total}" if total else f"{seen}"
            progress(
                f"{engine.description}: {shown} images", min(1.0, seen / total) if total else 0.0
            )
    return answers
