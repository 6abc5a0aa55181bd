"""The unit of every evaluation: one shard of a labelled set, run on some variant files.

A shard job carries paths and plain values only (the model's spec, the
variants and their ``.tflite`` paths, a :class:`~inference.formats.datasets.Shard`
that says which images), so it can run in this process, in a local worker
process or on a Ray node, and give the same answers everywhere: the same
three stages run in each place, in the same order on the same bytes.

1. :func:`read_shard` (from :mod:`inference.formats.datasets`): the shard's
   records, read by the worker itself;
2. :func:`prepare`: decode and preprocess a batch of records (decoding with
   JPEG draft mode, as the app classifies);
3. :class:`VariantModels`: the variants' LiteRT runners, loaded once per process
   (or actor), give each image's top-5 classes and top-1 confidence.

Nothing here imports TensorFlow: the Keras ``original`` is only ever run by
the process that already has it (the caller passes its runner).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.core.errors import InputError
from inference.core.specs import AnyVariant, ModelSpec
from inference.engine.runners import LiteRTRunner, Runner
from inference.formats.corruptions import Corruption
from inference.formats.datasets import BATCH_SIZE, Record, Shard, read_shard
from inference.formats.images import decode_image, draft_size, normalize, prepare_image

__all__ = [
    "RAY_ADDRESS_ENV",
    "TOP",
    "Engine",
    "Prepared",
    "ShardJob",
    "ShardResult",
    "VariantModels",
    "batched",
    "configured_ray_address",
    "normalize",
    "prepare",
    "run_shard",
]

TOP = 5
"""Classes kept per image and variant: enough for top-1, top-5 and agreement."""


@dataclass(frozen=True)
class ShardJob:
    """What a worker needs to evaluate one shard: plain data, pickled to it."""

    spec: ModelSpec
    shard: Shard
    files: tuple[tuple[AnyVariant, str], ...]
    """(variant, path of its ``.tflite``), in report order."""
    threads: int = 1
    """LiteRT threads per runner: one per worker process, which fills its core."""
    corruption: Corruption | None = None
    """Applied to each picture as the model sees it, before normalizing (a robustness run)."""


@dataclass
class ShardResult:
    """Readable images' answers, with where the time went.

    ``shards`` and ``offsets`` say which image each row is: a local job gives one
    shard in order, a Ray batch any rows of any shards.
    """

    shards: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    top: dict[str, np.ndarray] = field(default_factory=dict)
    """Per variant name: ``(images, TOP)`` class indices, best first."""
    confidence: dict[str, np.ndarray] = field(default_factory=dict)
    """Per variant name: the top-1 probability of each image."""
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    """``read``, ``decode``, ``preprocess``, and ``inference`` per variant name."""
    node: str = ""
    """Where it ran: a Ray node id, or ``host:pid`` for a local process."""
    tensorflow_loaded: bool = False
    """Whether TensorFlow was imported where it ran (it never should be on a worker)."""
    corruption: Corruption | None = None
    """The job's corruption: which condition of a robustness run these answers are."""

    @property
    def images(self) -> int:
        return len(self.offsets)


@dataclass
class Prepared:
    """A batch of preprocessed images with what identifies them."""

    inputs: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    shard: np.ndarray
    problems: list[str]
    decode_s: float
    preprocess_s: float


def batched(items: Iterable[Record | str], size: int = BATCH_SIZE) -> Iterator[list[Record | str]]:
    """Lists of at most ``size`` items (records and problems), in order."""
    batch: list[Record | str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def prepare(
    items: Sequence[Record | str],
    spec: ModelSpec,
    *,
    pixels: bool = False,
    corruption: Corruption | None = None,
) -> Prepared:
    """Decode and preprocess records; an unreadable image becomes a one-line problem.

    With ``pixels``, the inputs are the cropped and resized uint8 pixels, a quarter
    of the float32 bytes, for :func:`normalize` where the model runs (a cluster
    moves them between nodes): the same numbers in the end. A ``corruption`` is
    applied to those pixels, seeded by each image's name, so every engine sees
    the same corrupted image.
    """
    pre = spec.preprocessing
    size = draft_size(pre)
    inputs, labels, offsets, shards, problems = [], [], [], [], []
    decode_s = preprocess_s = 0.0
    for item in items:
        if isinstance(item, str):
            problems.append(item)
            continue
        began = time.perf_counter()
        try:
            image = decode_image(item.data, name=item.name, color_mode=pre.color_mode,
                                 min_size=size)  # fmt: skip
        except InputError as exc:
            problems.append(str(exc))
            continue
        decoded = time.perf_counter()
        # One path for every caller: the picture as the model sees it (uint8, what
        # ``preprocess`` normalizes), corrupted if asked, then kept or normalized.
        resized = np.asarray(prepare_image(image, pre))
        if resized.ndim == 2:
            resized = resized[..., None]
        if corruption is not None:
            resized = corruption.apply(resized, item.name)
        inputs.append(resized if pixels else normalize(resized, pre.normalize))
        preprocess_s += time.perf_counter() - decoded
        decode_s += decoded - began
        labels.append(item.label)
        offsets.append(item.offset)
        shards.append(item.shard)
    shape = (0, *pre.input_shape)
    return Prepared(
        inputs=np.stack(inputs) if inputs else np.zeros(shape, np.uint8 if pixels else np.float32),
        labels=np.asarray(labels, np.int32),
        offsets=np.asarray(offsets, np.int64),
        shard=np.asarray(shards, np.int64),
        problems=problems,
        decode_s=decode_s,
        preprocess_s=preprocess_s,
    )


RAY_ADDRESS_ENV = "QUANTLENS_RAY_ADDRESS"
"""A Ray cluster's address (or ``auto``): evaluations, scans and searches run on it."""


def configured_ray_address(address: str | None = None) -> str | None:
    """``address``, else the environment's, else None (blank counts as unset)."""
    address = (address or os.environ.get(RAY_ADDRESS_ENV) or "").strip()
    return address or None


class Engine(ABC):
    """Runs shard jobs and yields their results as they finish (in any order)."""

    kind: str
    """``process``, ``pool`` or ``ray``."""
    workers: int
    nodes: int = 1
    threads: int = 1
    """LiteRT threads per runner: one per worker, which fills its core."""

    @property
    def description(self) -> str:
        """One line for a page or the CLI: where the work runs."""
        if self.kind == "ray":
            return f"running on a Ray cluster, {self.nodes} node{'s' * (self.nodes != 1)}"
        if self.kind == "pool":
            return f"running on {self.workers} local worker processes"
        return "running in this process"

    @abstractmethod
    def run(
        self, jobs: Sequence[ShardJob], runners: Mapping[AnyVariant, Runner] | None = None
    ) -> Iterator[ShardResult]:
        """Results of ``jobs``. ``runners`` are already loaded ones an in-process run reuses."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers (a Ray cluster itself is left running)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_LOADED: dict[tuple[str, int], LiteRTRunner] = {}
"""Runners a worker process loaded, by (path, threads): each file is opened once."""


class VariantModels:
    """Variants' runners that answer a batch: top-:data:`TOP` classes and top-1 confidence.

    Built from ``.tflite`` paths (a worker, an actor: each file loaded once per
    process) or from runners the caller already has (in process, the Keras
    original among them).
    """

    def __init__(
        self,
        spec: ModelSpec,
        files: Sequence[tuple[AnyVariant, str]] = (),
        *,
        runners: Mapping[AnyVariant, Runner] | None = None,
        threads: int = 1,
    ) -> None:
        self.runners: dict[str, Runner] = {}
        for variant, path in files:
            key = (str(path), threads)
            if key not in _LOADED:
                _LOADED[key] = LiteRTRunner(spec, variant, Path(path), threads=threads)
            self.runners[variant.value] = _LOADED[key]
        for variant, runner in (runners or {}).items():
            self.runners[variant.value] = runner

    def __call__(
        self, inputs: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
        top: dict[str, np.ndarray] = {}
        confidence: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        for name, runner in self.runners.items():
            if not len(inputs):
                top[name] = np.zeros((0, TOP), np.int16)
                confidence[name] = np.zeros(0, np.float32)
                seconds[name] = 0.0
                continue
            began = time.perf_counter()
            probabilities = runner.predict(inputs)
            seconds[name] = time.perf_counter() - began
            order = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP]
            top[name] = order.astype(np.int16)
            confidence[name] = np.take_along_axis(probabilities, order[:, :1], axis=1)[:, 0]
        return top, confidence, seconds


def here() -> str:
    """This process, as ``host:pid`` (a Ray run names its nodes instead)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_shard(
    job: ShardJob,
    models: VariantModels | None = None,
    reader: Callable[[Shard], Iterator[Record | str]] = read_shard,
) -> ShardResult:
    """Read, decode, preprocess and run one shard on every variant; in-process or in a worker.

    ``models`` are the caller's (with runners it already holds); by default the
    job's files are loaded once per process. ``reader`` reads the shard (in this
    process, a set's own :meth:`~inference.formats.datasets.LabelledSet.read`).
    """
    models = models or VariantModels(job.spec, job.files, threads=job.threads)
    result = ShardResult(
        shards=np.zeros(0, np.int64),
        offsets=np.zeros(0, np.int64),
        labels=np.zeros(0, np.int32),
        node=here(),
        corruption=job.corruption,
    )
    parts: dict[str, list[np.ndarray]] = {"shards": [], "offsets": [], "labels": []}
    tops: dict[str, list[np.ndarray]] = {name: [] for name in models.runners}
    sure: dict[str, list[np.ndarray]] = {name: [] for name in models.runners}
    seconds = {"read": 0.0, "decode": 0.0, "preprocess": 0.0}
    batches = batched(reader(job.shard))
    while True:
        began = time.perf_counter()
        batch = next(batches, None)
        seconds["read"] += time.perf_counter() - began
        if batch is None:
            break
        prepared = prepare(batch, job.spec, corruption=job.corruption)
        seconds["decode"] += prepared.decode_s
        seconds["preprocess"] += prepared.preprocess_s
        result.problems.extend(prepared.problems)
        top, confidence, spent = models(prepared.inputs)
        parts["shards"].append(prepared.shard)
        parts["offsets"].append(prepared.offsets)
        parts["labels"].append(prepared.labels)
        for name in models.runners:
            tops[name].append(top[name])
            sure[name].append(confidence[name])
            seconds[f"inference {name}"] = seconds.get(f"inference {name}", 0.0) + spent[name]
    if parts["offsets"]:
        result.shards = np.concatenate(parts["shards"])
        result.offsets = np.concatenate(parts["offsets"])
        result.labels = np.concatenate(parts["labels"])
        result.top = {name: np.concatenate(rows) for name, rows in tops.items()}
        result.confidence = {name: np.concatenate(rows) for name, rows in sure.items()}
    else:
        result.top = {name: np.zeros((0, TOP), np.int16) for name in models.runners}
        result.confidence = {name: np.zeros(0, np.float32) for name in models.runners}
    result.seconds = seconds
    result.tensorflow_loaded = "tensorflow" in sys.modules
    return result
