"""Accuracy of every variant on a labelled image set, in this process, a local pool or on Ray.

A labelled set (:mod:`inference.formats.datasets`: a folder of class folders, a
zip, a CSV manifest, Parquet or WebDataset tar shards) is streamed shard by
shard through an engine (:mod:`inference.engine.executors`): each shard is read,
decoded, preprocessed and run on every variant where the engine runs it, and
only each image's top-5 and top-1 confidence come back. The answers are put
back in the set's order, so a run gives the same per-image answers and the
same accuracies on any engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from inference.analysis.answers import Answers, run_conditions, shard_size
from inference.analysis.calibration import (
    expected_calibration_error,
    flips_by_confidence,
    reliability,
)
from inference.core.errors import InputError
from inference.core.specs import AnyVariant, ModelSpec, Variant
from inference.engine.executors import InProcess
from inference.engine.runners import LiteRTRunner, Runner
from inference.engine.shards import Engine
from inference.formats.corruptions import Corruption

# Labelled sets are read in formats/ (inference.formats.datasets); their names stay
# importable from here for the callers that import them from this module.
from inference.formats.datasets import (
    _READABLE_COMPRESSION,  # noqa: F401
    BATCH_SIZE,
    MAX_MEMBER_BYTES,
    MAX_UPLOAD_IMAGES,
    MAX_ZIP_BYTES,
    MAX_ZIP_MEMBERS,
    LabelledImage,
    LabelledSet,
    Record,
    Shard,
    ZipMember,
    _match_folders,  # noqa: F401
    label_key,
    labelled_set,
    open_labelled,
    read_shard,
    scan_folder,
    scan_zip,
)

__all__ = [
    "BATCH_SIZE",
    "MAX_MEMBER_BYTES",
    "MAX_UPLOAD_IMAGES",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "Evaluation",
    "LabelledImage",
    "LabelledSet",
    "Record",
    "Shard",
    "VariantScore",
    "ZipMember",
    "evaluate",
    "label_key",
    "labelled_set",
    "open_labelled",
    "read_shard",
    "scan_folder",
    "scan_zip",
]


@dataclass(frozen=True)
class VariantScore:
    """How one variant did on the set."""

    variant: AnyVariant
    accuracy: float
    top5: float
    agreement: float | None
    """Share of images whose top-1 equals the reference variant's top-1."""
    per_class: dict[int, float]
    confusion: np.ndarray = field(repr=False)
    """Rows: true classes of the set; columns: the same classes plus "other"."""
    median_ms: float
    top1: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    """Each image's top-1 class, in the set's order."""
    confidence: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.float32))
    """Each image's top-1 probability."""
    truth: np.ndarray | None = field(repr=False, default=None)
    """Each image's true class."""

    @property
    def ece(self) -> float:
        """Expected calibration error of its top-1 confidence (15 bins)."""
        truth = self.top1 if self.truth is None else self.truth
        return expected_calibration_error(self.confidence, self.top1 == truth)

    def as_row(self) -> dict[str, object]:
        return {
            "variant": self.variant.value,
            "accuracy": round(self.accuracy, 4),
            "top-5": round(self.top5, 4),
            "agreement": None if self.agreement is None else round(self.agreement, 4),
            "ECE": round(self.ece, 4) if len(self.top1) else None,
            "median ms": round(self.median_ms, 3),
        }


@dataclass(frozen=True)
class Evaluation:
    model: str
    reference: AnyVariant
    classes: tuple[int, ...]
    labels: tuple[str, ...]
    images: int
    scores: tuple[VariantScore, ...]
    problems: tuple[str, ...]
    engine: str = "running in this process"
    """Where it ran (:attr:`~inference.engine.shards.Engine.description`)."""
    seconds: float = 0.0
    """Wall-clock seconds of the run; when several conditions share one engine run
    (:func:`evaluate_conditions`), its time shared equally among them."""
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds per stage summed over every worker: read, decode, preprocess, inference."""
    nodes: dict[str, int] = field(default_factory=dict)
    """Images each node (Ray) or process answered."""
    tensorflow_on_workers: bool = False
    """Whether any worker had TensorFlow imported (it never should)."""
    keys: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    """Each scored image as ``shard << 32 | offset`` in the set that was evaluated."""
    dataset: LabelledSet | None = field(repr=False, default=None)
    """That set (as sharded for the run): where :meth:`forgotten` finds the images."""

    def forgotten(self, variant: AnyVariant, limit: int = 24) -> list[dict[str, object]]:
        """Images where ``variant``'s top-1 differs from the reference's, surest reference first.

        Each: ``name``, ``source`` (the encoded image or its path; None when the set is not
        a listing), the true class, and both answers with their confidence.
        """
        reference = next(s for s in self.scores if s.variant == self.reference)
        score = next(s for s in self.scores if s.variant == variant)
        differ = np.flatnonzero(score.top1 != reference.top1)
        order = differ[np.argsort(-reference.confidence[differ], kind="stable")][:limit]
        listed = self.dataset is not None and self.dataset.count is not None
        found = []
        for row in order:
            shard, offset = int(self.keys[row] >> 32), int(self.keys[row] & 0xFFFFFFFF)
            name, source = f"image {row}", None
            if listed:
                try:
                    name = self.dataset.shards[shard].items[offset][0]
                    source = self.dataset.images[
                        sum(len(s.items) for s in self.dataset.shards[:shard]) + offset
                    ].source
                except (IndexError, InputError):
                    source = None
            found.append({
                "name": name,
                "source": source,
                "truth": self.labels[int(score.truth[row])],
                "reference": self.labels[int(reference.top1[row])],
                "reference_confidence": float(reference.confidence[row]),
                "variant": self.labels[int(score.top1[row])],
                "variant_confidence": float(score.confidence[row]),
            })  # fmt: skip
        return found

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def stage_shares(self) -> dict[str, float]:
        """Each stage's share of the work time (inference: all variants together)."""
        grouped: dict[str, float] = {}
        for stage, spent in self.stages.items():
            key = "inference" if stage.startswith("inference") else stage
            grouped[key] = grouped.get(key, 0.0) + spent
        total = sum(grouped.values())
        return {k: v / total for k, v in grouped.items()} if total > 0 else {}

    def summary(self) -> dict[str, object]:
        """What ``evaluate --json`` reports about the run itself."""
        total = sum(self.nodes.values()) or 1
        return {
            "engine": self.engine,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "stage_seconds": {k: round(v, 4) for k, v in self.stages.items()},
            "stage_shares": {k: round(v, 4) for k, v in self.stage_shares().items()},
            "nodes": [
                {"node": node, "images": count, "share": round(count / total, 4)}
                for node, count in self.nodes.items()
            ],
        }

    def calibration(self) -> dict[str, object]:
        """Per variant: ECE, reliability diagram bins, flips by the reference's confidence."""
        reference = next(s for s in self.scores if s.variant == self.reference)
        return {
            s.variant.value: {
                "ece": round(s.ece, 6),
                "reliability": reliability(s.confidence, s.top1 == s.truth),
                "flips_by_reference_confidence": None
                if s.variant == self.reference
                else flips_by_confidence(reference.confidence, reference.top1, s.top1),
            }
            for s in self.scores
        }

    def per_class_rows(self) -> list[dict[str, object]]:
        rows = []
        for index in self.classes:
            row: dict[str, object] = {"class": self.labels[index]}
            for score in self.scores:
                row[score.variant.value] = round(score.per_class[index], 4)
            rows.append(row)
        return rows

    def confusion_rows(self, variant: AnyVariant) -> list[dict[str, object]]:
        """Long-form confusion matrix: true class, predicted class, count."""
        score = next(s for s in self.scores if s.variant == variant)
        names = [self.labels[i] for i in self.classes] + ["other"]
        return [
            {"true": names[r], "predicted": names[c], "count": int(score.confusion[r, c])}
            for r in range(len(self.classes))
            for c in range(len(names))
        ]


def evaluate(
    spec: ModelSpec,
    runners: dict[AnyVariant, Runner],
    dataset: LabelledSet,
    *,
    engine: Engine | None = None,
    progress: Callable[[str, float], None] | None = None,
    corruption: Corruption | None = None,
) -> Evaluation:
    """Run every variant on every image of ``dataset`` and score them.

    Each image is decoded and preprocessed once per run and fed to every variant
    of it, so the variants see exactly the same inputs. On a pool or a Ray
    cluster the ``.tflite`` runners' files go to the workers; the Keras original
    (TensorFlow never goes to a worker) runs here, on the same images. A
    ``corruption`` is applied to every picture first (a robustness run).

    Raises:
        InputError: None of the images could be decoded.
    """
    return evaluate_conditions(
        spec, runners, dataset, (corruption,), engine=engine, progress=progress
    )[corruption]


def evaluate_conditions(
    spec: ModelSpec,
    runners: Mapping[AnyVariant, Runner],
    dataset: LabelledSet,
    conditions: Sequence[Corruption | None],
    *,
    engine: Engine | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> dict[Corruption | None, Evaluation]:
    """:func:`evaluate` once per condition of the set, all in one engine run.

    Raises:
        InputError: No variant, or none of the images could be decoded.
    """
    if not runners:
        raise InputError("expected at least one variant to evaluate; received none")
    engine = engine or InProcess()
    began = time.perf_counter()
    files = [(v, str(r.path)) for v, r in runners.items() if isinstance(r, LiteRTRunner)]
    here = {v: r for v, r in runners.items() if not isinstance(r, LiteRTRunner)}
    if engine.kind == "process" or not files:
        answers = run_conditions(spec, dataset, conditions, runners=runners, progress=progress)
        extra = None
    else:
        # Shards small enough for every worker to get some; both runs read the same ones.
        dataset = dataset.with_shard_size(shard_size(dataset.count, engine.workers))
        answers = run_conditions(
            spec, dataset, conditions, files=files, engine=engine, progress=progress
        )
        # TensorFlow never goes to a worker: the Keras original runs here, on the same images.
        extra = run_conditions(spec, dataset, conditions, runners=here) if here else None
    seconds = (time.perf_counter() - began) / len(conditions)
    return {
        condition: _scored(
            spec, runners, dataset, answers[condition],
            extra[condition] if extra else None, engine, seconds,
        )
        for condition in conditions
    }  # fmt: skip


def _scored(
    spec: ModelSpec,
    runners: Mapping[AnyVariant, Runner],
    dataset: LabelledSet,
    answers: Answers,
    extra: Answers | None,
    engine: Engine,
    seconds: float,
) -> Evaluation:
    """One condition's answers (and the original's, run here) scored per variant."""
    reference = Variant.ORIGINAL if Variant.ORIGINAL in runners else next(iter(runners))
    if not answers.count:
        raise InputError("none of the images could be read; " + "; ".join(answers.problems[:3]))
    ordered = answers.ordered()
    if extra is not None:
        ordered = ordered.joined(extra.ordered())
        for name, times in extra.per_image_ms.items():
            answers.per_image_ms[name] = times
    truth, tops, confidences = ordered.labels.astype(np.int64), ordered.top, ordered.confidence
    classes = tuple(sorted({int(c) for c in np.unique(truth)}))
    column = {index: i for i, index in enumerate(classes)}
    scores = []
    for variant in runners:
        top5 = tops[variant.value].astype(np.int64)
        top1 = top5[:, 0]
        confusion = np.zeros((len(classes), len(classes) + 1), dtype=np.int64)
        columns = np.asarray([column.get(int(p), len(classes)) for p in top1])
        rows = np.asarray([column[int(t)] for t in truth])
        np.add.at(confusion, (rows, columns), 1)
        per_class = {c: float(np.mean(top1[truth == c] == c)) for c in classes}
        agreement = (
            None if variant == reference else float(np.mean(top1 == tops[reference.value][:, 0]))
        )
        scores.append(
            VariantScore(
                variant=variant,
                accuracy=float(np.mean(top1 == truth)),
                top5=float(np.mean((top5 == truth[:, None]).any(axis=1))),
                agreement=agreement,
                per_class=per_class,
                confusion=confusion,
                median_ms=float(np.median(answers.per_image_ms[variant.value])),
                top1=top1,
                confidence=confidences[variant.value],
                truth=truth,
            )
        )
    return Evaluation(
        model=spec.name,
        reference=reference,
        classes=classes,
        labels=spec.labels,
        images=len(truth),
        scores=tuple(scores),
        problems=tuple(answers.problems),
        engine=engine.description,
        seconds=seconds,
        stages=dict(answers.seconds),
        nodes=dict(answers.nodes),
        tensorflow_on_workers=answers.tensorflow_on_workers,
        keys=ordered.keys,
        dataset=dataset,
    )
