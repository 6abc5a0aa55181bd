"""Conversions that run in the background, so pages show what is ready and never wait.

A page asks for the variants it lacks with :meth:`Conversions.start` and goes
on showing the ones that are ready; it polls :attr:`Conversion.progress`, and
each variant appears as soon as its file exists. The server's warm start uses
the same registry (at a lower priority), so a visitor who asks for the default
model while it converts joins that conversion instead of starting another.
Each conversion is a thread that waits on :func:`inference.engine.convert.ensure_variants`,
which runs the work itself in child processes.

A failed conversion stays in the registry until someone asks again with
:meth:`Conversions.retry` (the page's "Try again"): a page that reruns keeps
showing the failure instead of starting it again, however long the
conversion ran before it failed (a timeout fails after its whole time limit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from inference.core.specs import AnyVariant, ModelSpec
from inference.engine.convert import ensure_variants, lower_priority
from inference.registry.runner_cache import model_key

__all__ = ["CONVERSIONS", "Conversion", "Conversions"]

MAX_FAILURES = 50
"""Failed conversions remembered, for every model together; past it, the oldest is forgotten."""


@dataclass
class Conversion:
    """One background conversion of some variants of one model."""

    spec: ModelSpec
    variants: tuple[AnyVariant, ...]
    started: float = field(default_factory=lambda: time.monotonic())
    finished: float | None = None
    """When it succeeded or failed (``time.monotonic``); None while it runs."""
    message: str = "starting the converter"
    fraction: float = 0.0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def _report(self, message: str, fraction: float) -> None:
        self.message, self.fraction = message, fraction

    @property
    def seconds(self) -> float:
        """How long it ran, or has been running."""
        end = time.monotonic() if self.finished is None else self.finished
        return end - self.started

    @property
    def failed(self) -> bool:
        return self.done.is_set() and self.error is not None


class Conversions:
    """The process's background conversions, one registry for every session."""

    def __init__(self) -> None:
        self._jobs: dict[str, list[Conversion]] = {}
        self._lock = threading.Lock()

    def start(
        self, spec: ModelSpec, variants: Sequence[AnyVariant], *, nice: int = 0
    ) -> Conversion:
        """Convert ``variants`` in the background, or join a running conversion that covers them."""
        return self._start(spec, variants, nice=nice, retry=False)

    def retry(
        self, spec: ModelSpec, variants: Sequence[AnyVariant], *, nice: int = 0
    ) -> Conversion:
        """Forget the failed conversions of any of ``variants``, then :meth:`start` them."""
        return self._start(spec, variants, nice=nice, retry=True)

    def _start(
        self, spec: ModelSpec, variants: Sequence[AnyVariant], *, nice: int, retry: bool
    ) -> Conversion:
        wanted = tuple(v for v in variants if v.is_tflite)
        key = model_key(spec)
        with self._lock:
            self._forget_old_failures()
            kept = [  # running, or failed and not asked for again; finished ones are done with
                job
                for job in self._jobs.get(key, [])
                if not job.done.is_set()
                or (job.failed and not (retry and set(wanted) & set(job.variants)))
            ]
            for job in kept:
                if set(wanted) <= set(job.variants):
                    return job  # running, or failed: shown until someone asks to try again
            job = Conversion(spec, wanted)
            self._jobs[key] = [*kept, job]

        def work() -> None:
            try:
                with lower_priority(nice):
                    ensure_variants(spec, wanted, progress=job._report)
            except BaseException as exc:  # shown by the page that polls it
                job.error = exc
            finally:
                job.fraction = 1.0
                job.finished = time.monotonic()
                job.done.set()

        threading.Thread(target=work, name=f"convert {spec.name}", daemon=True).start()
        return job

    def clear(self) -> list[Conversion]:
        """Forget every conversion (tests start from an empty registry).

        Returns:
            The conversions that were still running: their threads go on, so a caller
            that needs them finished waits on their ``done``.
        """
        with self._lock:
            running = [job for jobs in self._jobs.values() for job in jobs if not job.done.is_set()]
            self._jobs.clear()
        return running

    def running(self, spec: ModelSpec) -> list[Conversion]:
        with self._lock:
            return [job for job in self._jobs.get(model_key(spec), []) if not job.done.is_set()]

    def _forget_old_failures(self) -> None:
        """Keep the registry bounded: the :data:`MAX_FAILURES` latest failures, and no empty model.

        Called with the lock held.
        """
        failures = sorted(
            (job for jobs in self._jobs.values() for job in jobs if job.failed),
            key=lambda job: job.finished or 0.0,
        )
        forget = {id(job) for job in failures[: max(len(failures) - MAX_FAILURES, 0)]}
        for key, jobs in list(self._jobs.items()):
            jobs = [
                job
                for job in jobs
                if not job.done.is_set() or (job.failed and id(job) not in forget)
            ]
            if jobs:
                self._jobs[key] = jobs
            else:
                del self._jobs[key]


CONVERSIONS = Conversions()
