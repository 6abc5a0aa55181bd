"""Runners shared by every session of the app and every API request: a small thread-safe LRU.

The dashboard's pages and the REST API live in one server process and must
share one copy of each loaded model, so the cache lives here, below both
(``api/`` never imports ``ui/``). It is bounded, so the app stays inside
Community Cloud's 2.7 GB; loading happens outside the table lock, under a
per-key lock, so two sessions asking for the same variant load it once and
sessions asking for different ones do not wait for each other.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from inference.core.errors import InputError
from inference.core.machine import resident_bytes
from inference.core.specs import AnyVariant, ModelSpec
from inference.engine.runners import Runner
from inference.registry.loading import load_runner

__all__ = ["MAX_CACHED_RUNNERS", "RUNNERS", "Release", "RunnerCache", "memory_cap", "model_key"]

log = logging.getLogger("inference")

MAX_CACHED_RUNNERS = 8
"""Runners kept for all sessions: the five variants of one model plus a few more."""
CAP_ENV = "QUANTLENS_MEMORY_CAP_MB"
SHARE_ENV = "QUANTLENS_MEMORY_SHARE"
DEFAULT_CAP_BYTES = 2_700_000_000
"""Streamlit Community Cloud's memory limit for an app."""
DEFAULT_SHARE = 0.8


def memory_cap() -> tuple[int, float]:
    """The server's memory cap in bytes and the share of it past which runners are released."""
    try:
        cap = int(float(os.environ.get(CAP_ENV, "")) * 1e6)
    except ValueError:
        cap = DEFAULT_CAP_BYTES
    try:
        share = float(os.environ.get(SHARE_ENV, DEFAULT_SHARE))
    except ValueError:
        share = DEFAULT_SHARE
    return (cap if cap > 0 else DEFAULT_CAP_BYTES), min(max(share, 0.05), 1.0)


def _default_threshold() -> int:
    cap, share = memory_cap()
    return int(cap * share)


@dataclass(frozen=True)
class Release:
    """Runners let go because the server's memory passed its threshold."""

    when: float
    """``time.time()`` of the release."""
    released: tuple[str, ...]
    """``model variant`` of each runner released."""
    resident_before: int
    resident_after: int
    threshold: int


def model_key(spec: ModelSpec) -> str:
    """Identifies a runner: the weights, and the labels, scaling and output kind it answers with.

    Two people uploading the same file with different labels must not share answers.
    """
    served = hashlib.sha256(
        repr((spec.labels, spec.preprocessing, spec.outputs)).encode()
    ).hexdigest()[:12]
    return f"{spec.name}:{spec.fingerprint}:{served}"


class RunnerCache:
    """At most ``capacity`` runners; the least recently used is dropped first."""

    def __init__(
        self,
        capacity: int = MAX_CACHED_RUNNERS,
        *,
        threshold: Callable[[], int] | None = None,
        resident: Callable[[], int] = resident_bytes,
    ) -> None:
        """A cache of ``capacity`` runners.

        Args:
            capacity: Most runners kept.
            threshold: Resident bytes past which the least recently used runners are
                released before a new one loads (default: ``$QUANTLENS_MEMORY_SHARE``
                of ``$QUANTLENS_MEMORY_CAP_MB``, 0.8 of 2.7 GB).
            resident: The process's resident bytes (a parameter for tests).
        """
        self.capacity = capacity
        self._threshold = threshold or _default_threshold
        self._resident = resident
        self._runners: OrderedDict[tuple[str, AnyVariant], Runner] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, AnyVariant], threading.Lock] = {}
        self.releases: list[Release] = []
        """The last releases under memory pressure, newest last (the Models page shows them)."""

    def _relieve(self) -> None:
        """Release least recently used runners while memory is past the threshold."""
        threshold = self._threshold()
        before = self._resident()
        if before <= threshold:
            return
        released = []
        while self._resident() > threshold:
            with self._lock:
                if not self._runners:
                    break
                (_, variant), runner = self._runners.popitem(last=False)
            released.append(f"{runner.spec.title} {variant}")
            del runner
            gc.collect()  # the interpreter's buffers go when the last reference does
        if released:
            after = self._resident()
            log.warning(
                "memory %.2f GB past %.2f GB: released %s (now %.2f GB)",
                before / 1e9, threshold / 1e9, ", ".join(released), after / 1e9,
            )  # fmt: skip
            with self._lock:
                self.releases = [
                    *self.releases[-9:],
                    Release(time.time(), tuple(released), before, after, threshold),
                ]

    def get(self, spec: ModelSpec, variant: AnyVariant | str) -> Runner:
        """The shared runner of ``spec`` as ``variant``, loading it on first use."""
        key = (model_key(spec), spec.variant(variant))
        with self._lock:
            if key in self._runners:
                self._runners.move_to_end(key)
                return self._runners[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._runners:  # another thread loaded it meanwhile
                    self._runners.move_to_end(key)
                    return self._runners[key]
            self._relieve()  # before the new one takes its memory
            runner = load_runner(spec, key[1])
            with self._lock:
                self._runners[key] = runner
                self._loading.pop(key, None)
                while len(self._runners) > self.capacity:
                    # Not closed: a session may be in the middle of a call on it; the
                    # interpreter goes when the last reference does.
                    self._runners.popitem(last=False)
            return runner

    def __contains__(self, item: tuple[ModelSpec, AnyVariant | str]) -> bool:
        spec, variant = item
        try:
            key = (model_key(spec), spec.variant(variant))
        except InputError:
            return False
        with self._lock:
            return key in self._runners

    def __len__(self) -> int:
        with self._lock:
            return len(self._runners)

    def clear(self) -> None:
        """Forget every runner and the release history (tests start from an empty cache)."""
        with self._lock:
            self._runners.clear()
            self.releases = []


RUNNERS = RunnerCache()
"""The process-wide cache the pages and the API share."""
