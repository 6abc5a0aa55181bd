"""Shard jobs on a Ray cluster: Ray Data streams reads and preprocessing into an actor pool.

The pipeline is the local unit (:mod:`inference.engine.shards`) cut at its
stages, so the answers are the same as in one process:

1. ``flat_map``: each shard's records, read on a node (:func:`read_shard`);
2. ``map_batches``: decode and preprocess (:func:`prepare`), on any node, while
   the models run on others;
3. ``map_batches`` on an actor pool: each actor loads the variant files once
   (LiteRT, one thread; never TensorFlow) and answers batch after batch.

Only plain data crosses: pickled shards, encoded bytes, float32 arrays and
file paths. The paths (the set, the ``.tflite`` files) must be readable on
every node: one machine, or a folder every node mounts. This module imports
Ray; nothing else in the project does, and it is imported only when a cluster
address is configured.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from inference.core.errors import ConversionError, UsageError
from inference.core.specs import AnyVariant, ModelSpec
from inference.engine.runners import Runner
from inference.engine.shards import (
    TOP,
    Engine,
    ShardJob,
    ShardResult,
    VariantModels,
    normalize,
    prepare,
)
from inference.formats.datasets import Record, read_shard

__all__ = ["RayEngine", "connect"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ACTOR_START_S = 600
INFER_BATCH = 16
"""Images decoded, and run by an actor, per task: small, so that tasks spread over the nodes."""
"""How long a run waits for its actor pool to start before it fails with Ray's own message."""
_LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch (read when Ray is imported) that makes it name this node 127.0.0.1."""


def _import_ray(address: str) -> Any:
    host = urlparse(address if "://" in address else f"ray://{address}").hostname or ""
    if host in _LOOPBACK:
        # Ray rewrites a loopback address to the address it sees the world from (it
        # "connects" a UDP socket to 8.8.8.8), where a cluster kept on loopback does not
        # listen; this switch makes it keep 127.0.0.1. Read at import: set it first.
        os.environ.setdefault(_LOOPBACK_ONLY, "0")
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError:
        raise UsageError(
            "a Ray address is configured but Ray is not installed: "
            "pip install -r requirements-cluster.txt"
        ) from None
    if host in _LOOPBACK and os.environ.get(_LOOPBACK_ONLY) == "0":
        importlib.import_module("ray._private.ray_constants").ENABLE_RAY_CLUSTER = False
    return ray


def connect(address: str) -> Any:
    """Join the cluster at ``address`` (``auto``: the one on this machine) once per process.

    Returns:
        The ``ray`` module.

    Raises:
        UsageError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = _import_ray(address)
    if ray.is_initialized():
        return ray
    host = urlparse(address if "://" in address else f"ray://{address}").hostname or ""
    options: dict[str, Any] = {}
    if host in _LOOPBACK:
        options["_node_ip_address"] = "127.0.0.1"
    try:
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level=logging.WARNING,
            # The workers import this project from the driver's copy, wherever they run.
            runtime_env={"py_modules": [str(Path(__file__).resolve().parents[1])]},
            **options,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # The actor pool starts when all its actors are up, not with the first one: else a
    # quick set is done by the first node alone while the others are still starting.
    context.wait_for_min_actors_s = ACTOR_START_S
    # Batches go to the least busy actor, not to the one on the node that decoded them:
    # inference is the costly stage, and locality would keep a small set on one node.
    context.execution_options.actor_locality_enabled = False
    return ray


def _cpu_nodes(ray: Any) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]


def _read(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Stage 1: a shard's records as rows (encoded bytes); problems as rows of their own.

    Each row keeps its job's pickled corruption (empty bytes: none), so one run can
    carry every condition of a robustness run.
    """
    shard = pickle.loads(row["shard"])
    condition = row["corruption"]
    rows = []
    for item in read_shard(shard):
        if isinstance(item, str):
            rows.append({"shard": shard.index, "offset": -1, "name": "", "label": -1,
                         "data": b"", "problem": item, "corruption": condition})  # fmt: skip
            continue
        data = item.data
        if isinstance(data, Path):
            try:
                data = data.read_bytes()
            except OSError as exc:
                rows.append({"shard": shard.index, "offset": -1, "name": item.name, "label": -1,
                             "data": b"", "problem": f"{item.name}: {exc.strerror}",
                             "corruption": condition})  # fmt: skip
                continue
        rows.append({"shard": item.shard, "offset": item.offset, "name": item.name,
                     "label": item.label, "data": data, "problem": "",
                     "corruption": condition})  # fmt: skip
    return rows


def _prepare(batch: dict[str, np.ndarray], spec: ModelSpec) -> dict[str, np.ndarray]:
    """Stage 2: decode and preprocess; a row that fails keeps its place with its problem.

    Rows of different conditions (corruptions) may share a batch: each condition's
    rows are prepared together, with their own corruption.
    """
    count = len(batch["offset"])
    problems = [str(p) for p in batch["problem"]]
    inputs = np.zeros((count, *spec.preprocessing.input_shape), np.uint8)
    ok = np.zeros(count, bool)
    decode_s = preprocess_s = 0.0
    conditions = [bytes(c) for c in batch["corruption"]]
    for condition in dict.fromkeys(conditions):
        rows = [i for i in range(count) if conditions[i] == condition and not problems[i]]
        records = [
            Record(int(batch["shard"][i]), int(batch["offset"][i]), str(batch["name"][i]),
                   int(batch["label"][i]), bytes(batch["data"][i]))
            for i in rows
        ]  # fmt: skip
        corruption = pickle.loads(condition) if condition else None
        # uint8 across the cluster: 4x fewer bytes
        prepared = prepare(records, spec, pixels=True, corruption=corruption)
        decode_s += prepared.decode_s
        preprocess_s += prepared.preprocess_s
        where = {(int(batch["shard"][i]), int(batch["offset"][i])): i for i in rows}
        done = zip(prepared.shard.tolist(), prepared.offsets.tolist(), strict=True)
        for row, key in enumerate(done):
            inputs[where[key]] = prepared.inputs[row]
            ok[where[key]] = True
        failed = iter(prepared.problems)
        for i in rows:
            if not ok[i]:
                problems[i] = next(failed, "unreadable image")
    share = max(1, int(ok.sum()))
    return {
        "shard": batch["shard"],
        "offset": batch["offset"],
        "label": batch["label"],
        "corruption": batch["corruption"],
        "input": inputs,
        "problem": np.asarray(problems, dtype=object),
        "decode_s": np.full(count, decode_s / share),
        "preprocess_s": np.full(count, preprocess_s / share),
    }


class _Infer:
    """Stage 3, an actor: the variant files loaded once, then batch after batch."""

    def __init__(self, spec: ModelSpec, files: Sequence[tuple[AnyVariant, str]]) -> None:
        self.mode = spec.preprocessing.normalize
        self.models = VariantModels(spec, files, threads=1)
        self.node = importlib.import_module("ray").get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["offset"])
        ok = np.asarray([not p for p in batch["problem"]], bool)
        began = time.perf_counter()
        inputs = normalize(np.asarray(batch["input"])[ok], self.mode)
        scaling = time.perf_counter() - began
        top, confidence, seconds = self.models(inputs)
        kept = ("shard", "offset", "label", "corruption", "problem", "decode_s")
        out = {k: batch[k] for k in kept}
        share = max(1, int(ok.sum()))
        out["preprocess_s"] = np.asarray(batch["preprocess_s"]) + scaling / share
        for name in self.models.runners:
            full = np.full((count, TOP), -1, np.int16)
            full[ok] = top[name]
            sure = np.zeros(count, np.float32)
            sure[ok] = confidence[name]
            out[f"top {name}"] = full
            out[f"confidence {name}"] = sure
            out[f"inference {name}"] = np.full(count, seconds[name] / share)
        out["node"] = np.full(count, self.node, dtype=object)
        out["tensorflow"] = np.full(count, "tensorflow" in sys.modules)
        return out


class RayEngine(Engine):
    """A Ray cluster: the shards stream through Ray Data, the models on an actor pool."""

    kind = "ray"
    threads = 1

    def __init__(self, address: str) -> None:
        self._ray = connect(address)
        self.address = address
        nodes = _cpu_nodes(self._ray)
        self.nodes = len(nodes)
        self.workers = max(1, int(sum(n["Resources"]["CPU"] for n in nodes)))

    def call(
        self, module: str, requests: Sequence[dict[str, Any]]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Independent jobs as Ray tasks (one CPU each): ``(index, answer)`` as each finishes.

        ``module`` is a worker module (:mod:`inference.engine.workers`) whose
        ``handle(request)`` a child process would run; the answer gains ``node``.

        Raises:
            ConversionError: A task failed (its one-line reason).
        """
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        pending = {remote.remote(module, request): i for i, request in enumerate(requests)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        yield index, ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                        raise ConversionError(f"a Ray task failed: {first}") from None
        finally:
            for ref in pending:
                ray.cancel(ref)

    def run(
        self, jobs: Sequence[ShardJob], runners: Mapping[AnyVariant, Runner] | None = None
    ) -> Iterator[ShardResult]:
        if not jobs:
            return
        ray = self._ray
        spec, files = jobs[0].spec, jobs[0].files
        names = [variant.value for variant, _ in files]
        dataset = (
            ray.data.from_items(
                [
                    {
                        "shard": pickle.dumps(job.shard),
                        "corruption": pickle.dumps(job.corruption) if job.corruption else b"",
                    }
                    for job in jobs
                ],
                override_num_blocks=len(jobs),
            )
            # Reading and preprocessing ask a tenth of a CPU, so several run beside each
            # actor and keep ahead of it: batches queue, and a busy actor's next one goes
            # to another node's actor.
            .flat_map(_read, num_cpus=0.1)
            .map_batches(
                _prepare,
                fn_kwargs={"spec": spec},
                batch_size=INFER_BATCH,
                batch_format="numpy",
                num_cpus=0.1,
            )
            .map_batches(
                _Infer,
                fn_constructor_kwargs={"spec": spec, "files": files},
                # Small decoded batches, one in flight per actor: a batch that arrives
                # while an actor is busy goes to another node's actor.
                compute=ray.data.ActorPoolStrategy(
                    size=self.workers, max_tasks_in_flight_per_actor=1
                ),
                batch_size=INFER_BATCH,
                batch_format="numpy",
                num_cpus=0.5,
                # The actors are spread over the nodes (half a CPU would let two share one).
                scheduling_strategy="SPREAD",
            )
        )
        for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
            yield from _results(batch, names)


def _call(module: str, request: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: a worker module's ``handle(request)`` (the job a child process would run)."""
    answer = importlib.import_module(module).handle(request)
    node = importlib.import_module("ray").get_runtime_context().get_node_id()
    return {**answer, "node": node, "tensorflow": "tensorflow" in sys.modules}


def _results(batch: dict[str, np.ndarray], names: Sequence[str]) -> Iterator[ShardResult]:
    """One result per node and condition that answered rows of ``batch``."""
    problems = [str(p) for p in batch["problem"]]
    ok = np.asarray([not p for p in problems], bool)
    nodes = np.asarray(batch["node"]).astype(str)
    conditions = [bytes(c) for c in batch["corruption"]]
    for node, condition in dict.fromkeys(zip(nodes.tolist(), conditions, strict=True)):
        mine = (nodes == node) & np.asarray([c == condition for c in conditions], bool)
        rows = mine & ok
        yield ShardResult(
            shards=np.asarray(batch["shard"])[rows].astype(np.int64),
            offsets=np.asarray(batch["offset"])[rows].astype(np.int64),
            labels=np.asarray(batch["label"])[rows].astype(np.int32),
            top={n: np.asarray(batch[f"top {n}"])[rows] for n in names},
            confidence={n: np.asarray(batch[f"confidence {n}"])[rows] for n in names},
            problems=[p for p, m in zip(problems, mine, strict=True) if m and p],
            seconds={
                "decode": float(np.sum(batch["decode_s"][rows])),
                "preprocess": float(np.sum(batch["preprocess_s"][rows])),
                **{f"inference {n}": float(np.sum(batch[f"inference {n}"][rows])) for n in names},
            },
            node=str(node),
            tensorflow_loaded=bool(np.any(np.asarray(batch["tensorflow"])[mine])),
            corruption=pickle.loads(condition) if condition else None,
        )
