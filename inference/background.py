"""Conversions that run in the background, so pages show what is ready and never wait.

A page asks for the variants it lacks with :meth:`Conversions.start` and goes
on showing the ones that are ready; it polls :attr:`Conversion.progress`, and
each variant appears as soon as its file exists. The server's warm start uses
the same registry (at a lower priority), so a visitor who asks for the default
model while it converts joins that conversion instead of starting another.
Each conversion is a thread that waits on :func:`inference.convert.ensure_variants`,
which runs the work itself in child processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from inference.convert import ensure_variants, lower_priority
from inference.runner_cache import model_key
from inference.specs import AnyVariant, ModelSpec

__all__ = ["CONVERSIONS", "Conversion", "Conversions"]

FAILURE_MEMORY_S = 30.0
"""A failed conversion is reported to pages this long before it may be tried again."""


@dataclass
class Conversion:
    """One background conversion of some variants of one model."""

    spec: ModelSpec
    variants: tuple[AnyVariant, ...]
    started: float = field(default_factory=time.monotonic)
    message: str = "starting the converter"
    fraction: float = 0.0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def _report(self, message: str, fraction: float) -> None:
        self.message, self.fraction = message, fraction

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class Conversions:
    """The process's background conversions, one registry for every session."""

    def __init__(self) -> None:
        self._jobs: dict[str, list[Conversion]] = {}
        self._lock = threading.Lock()

    def start(
        self, spec: ModelSpec, variants: Sequence[AnyVariant], *, nice: int = 0
    ) -> Conversion:
        """Convert ``variants`` in the background, or join a running conversion that covers them."""
        wanted = tuple(v for v in variants if v.is_tflite)
        key = model_key(spec)
        with self._lock:
            kept = [
                job
                for job in self._jobs.get(key, [])
                if not job.done.is_set() or (job.error and job.seconds < FAILURE_MEMORY_S)
            ]
            for job in kept:
                if set(wanted) <= set(job.variants):
                    return job  # running, or failed a moment ago: not retried on every rerun
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
                job.done.set()

        threading.Thread(target=work, name=f"convert {spec.name}", daemon=True).start()
        return job

    def running(self, spec: ModelSpec) -> list[Conversion]:
        with self._lock:
            return [job for job in self._jobs.get(model_key(spec), []) if not job.done.is_set()]


CONVERSIONS = Conversions()
