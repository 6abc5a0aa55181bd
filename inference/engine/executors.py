"""Three ways to run shard jobs: in this process, a local process pool, or a Ray cluster.

They run the same unit (:mod:`inference.engine.shards`) and differ only in
where: :func:`open_engine` picks one from ``--workers``/``--ray`` or the
``QUANTLENS_RAY_ADDRESS`` variable. Ray is imported only when an address is
given, so the app and the CLI work, and deploy, without it.

A local pool uses ``concurrent.futures`` with *spawn* workers (fresh
interpreters: no TensorFlow, no Streamlit, no inherited threads) that each
load the variant files once and keep them for every shard they are given.
Jobs are submitted a few at a time, so results never pile up in memory.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from inference.core.machine import default_threads
from inference.core.specs import AnyVariant
from inference.engine.runners import Runner
from inference.engine.shards import (
    RAY_ADDRESS_ENV,
    Engine,
    ShardJob,
    ShardResult,
    VariantModels,
    configured_ray_address,
    run_shard,
)
from inference.formats.datasets import Record, Shard, read_shard

__all__ = [
    "RAY_ADDRESS_ENV",
    "Engine",
    "InProcess",
    "LocalPool",
    "configured_ray_address",
    "open_engine",
]


class InProcess(Engine):
    """The shards one after another in this process, on the caller's runners if given."""

    kind = "process"
    workers = 1

    def __init__(self, reader: Callable[[Shard], Iterator[Record | str]] = read_shard) -> None:
        self.threads = default_threads()
        self.reader = reader

    def run(
        self, jobs: Sequence[ShardJob], runners: Mapping[AnyVariant, Runner] | None = None
    ) -> Iterator[ShardResult]:
        if not jobs:
            return
        if runners:
            loaded = {v for v in runners}
            files = [(v, p) for v, p in jobs[0].files if v not in loaded]
            models = VariantModels(jobs[0].spec, files, runners=runners, threads=jobs[0].threads)
        else:
            models = VariantModels(jobs[0].spec, jobs[0].files, threads=jobs[0].threads)
        for job in jobs:
            yield run_shard(job, models, self.reader)


class LocalPool(Engine):
    """``workers`` spawned processes on this machine, one LiteRT thread each."""

    kind = "pool"

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn")
        )

    def run(
        self, jobs: Sequence[ShardJob], runners: Mapping[AnyVariant, Runner] | None = None
    ) -> Iterator[ShardResult]:
        pending: set[Future[ShardResult]] = set()
        queue = list(jobs)[::-1]
        try:
            while queue or pending:
                # Two jobs in flight per worker: none idles, and few results wait.
                while queue and len(pending) < 2 * self.workers:
                    pending.add(self._pool.submit(run_shard, queue.pop()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def open_engine(workers: int | None = None, ray_address: str | None = None) -> Engine:
    """The engine asked for: Ray if an address is given or configured, else a pool or this process.

    Args:
        workers: Local worker processes; None means one per core, 0 means none (this
            process, whose runners use every core).
        ray_address: A Ray cluster's address, ``auto`` for the local one; default
            ``$QUANTLENS_RAY_ADDRESS``.

    Raises:
        UsageError: Ray is asked for but not installed, or the cluster cannot be reached.
    """
    address = configured_ray_address(ray_address)
    if address:
        # Only here: the app and the CLI never import Ray unless a cluster is configured.
        from inference.engine.ray_engine import RayEngine  # noqa: PLC0415

        return RayEngine(address)
    count = default_threads() if workers is None else workers
    return InProcess() if count < 1 else LocalPool(count)
