"""Graph JSON and node data handed to Model Explorer's page, by unguessable number.

The Layers page puts a candidate's graph (and its node data) here and points
the embedded Model Explorer at ``graphs://name/N``; the web app then fetches
``/api/v1/load_graphs_json?graph_index=N`` from this server. ``N`` is a random
52-bit number (a JavaScript number holds it exactly), so one visitor cannot
read another's graphs, and the store keeps the newest :data:`MAX_ENTRIES` (a
graph of Lite0 is ~0.2 MB of JSON).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict

__all__ = ["GRAPHS", "MAX_ENTRIES", "GraphStore"]

MAX_ENTRIES = 64


class GraphStore:
    """JSON texts by number, newest kept; thread-safe."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._texts: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def put(self, text: str) -> int:
        # Below 2**53: the web app reads the number as a JavaScript number.
        number = secrets.randbits(52) + 1
        with self._lock:
            self._texts[number] = text
            while len(self._texts) > self.max_entries:
                self._texts.popitem(last=False)
        return number

    def get(self, number: int) -> str | None:
        with self._lock:
            return self._texts.get(number)

    def clear(self) -> None:
        with self._lock:
            self._texts.clear()


GRAPHS = GraphStore()
