"""Runners shared by every session of the app and every API request: a small thread-safe LRU.

The dashboard's pages and the REST API live in one server process and must
share one copy of each loaded model, so the cache lives here, below both
(``api/`` never imports ``ui/``). It is bounded, so the app stays inside
Community Cloud's 2.7 GB; loading happens outside the table lock, under a
per-key lock, so two sessions asking for the same variant load it once and
sessions asking for different ones do not wait for each other.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from inference.errors import InputError
from inference.loading import load_runner
from inference.runners import Runner
from inference.specs import AnyVariant, ModelSpec

__all__ = ["MAX_CACHED_RUNNERS", "RUNNERS", "RunnerCache", "model_key"]

MAX_CACHED_RUNNERS = 8
"""Runners kept for all sessions: the five variants of one model plus a few more."""


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

    def __init__(self, capacity: int = MAX_CACHED_RUNNERS) -> None:
        self.capacity = capacity
        self._runners: OrderedDict[tuple[str, AnyVariant], Runner] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, AnyVariant], threading.Lock] = {}

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
        with self._lock:
            self._runners.clear()


RUNNERS = RunnerCache()
"""The process-wide cache the pages and the API share."""
