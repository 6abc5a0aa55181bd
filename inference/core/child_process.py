"""One protocol for the child processes (converter, quantizer, model check).

Work that can crash natively, hang, leak or exhaust memory (TensorFlow's
converter, loading a stranger's model file) runs in ``python -m <module>``.
The parent writes one JSON request to the child's stdin; the child answers
with JSON lines on stdout:

- ``{"event": "progress", "message": ..., "fraction": ...}`` while it works;
- ``{"event": "result", ...}`` once, when it succeeds;
- ``{"event": "error", "type": "InputError", "message": ...}`` when it fails
  (``type`` names an :mod:`inference.core.errors` class, or ``"unexpected"``).

Anything else on stdout (a library printing) is ignored; stderr goes to a log
file. :func:`run_child` enforces a time limit and, optionally, a memory limit,
and always kills the child when it returns or raises.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from inference.core.errors import InferenceError, error_type
from inference.core.paths import REPO_ROOT

__all__ = ["ChildFailed", "Progress", "emit", "run_child", "serve", "write_atomically"]

Progress = Callable[[str, float], None]
"""Called with (message, fraction done)."""


@dataclass
class ChildFailed(Exception):
    """The child ended without a result or an error of ours; the caller words the message."""

    reason: Literal["timeout", "exit", "unexpected", "memory"]
    detail: str
    """The exit status, the time limit, or the unexpected exception's first line."""


def emit(**event: Any) -> None:
    """Child side: write one event line."""
    print(json.dumps(event), flush=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Child side: write under a temporary name, then rename, so no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def serve(handler: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """Child side: read the request, run ``handler``, emit its result or its error.

    Returns the exit status for ``sys.exit``.
    """
    request = json.loads(sys.stdin.read() or "{}")
    try:
        result = handler(request)
    except InferenceError as exc:
        emit(event="error", type=type(exc).__name__, message=str(exc))
        return 1
    except Exception as exc:  # a bug or a library failure: the log keeps the traceback
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        emit(event="error", type="unexpected", message=f"{type(exc).__name__} {first}".strip())
        return 1
    emit(event="result", **result)
    return 0


_START = """\
import sys
module, address_space, nice = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if address_space:
    import resource
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        address_space = min(address_space, hard)
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
if nice:
    import os
    os.nice(nice)
del sys.argv[1:]
import runpy
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
"""The child's first step: set its own limits, then run ``module`` as ``python -m`` would.

The limits used to be set by ``preexec_fn``, which runs Python between fork and
exec; in a multithreaded parent (the Streamlit server, the REST API) that can
deadlock on a lock another thread held at fork time. Here they are set before
the module, or anything it imports, runs.
"""


def _command(module: str, memory_bytes: int | None, nice: int) -> list[str]:
    """``python -c _START module address_space nice`` (0: no limit, no change)."""
    address_space = memory_bytes if memory_bytes and sys.platform.startswith("linux") else 0
    return [sys.executable, "-c", _START, module, str(address_space), str(nice)]


def _resident_bytes(pid: int) -> int:
    """A process's resident set from /proc (0 where there is none)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _watch_resident(process: subprocess.Popen[str], limit: int, tripped: threading.Event) -> None:
    """Kill ``process`` once its resident memory passes ``limit`` (polled every 20 ms).

    The address-space limit alone cannot hold a TensorFlow child to a small
    footprint (TensorFlow reserves ~1.6 GB of address space just to import),
    so resident memory is what is bounded.
    """
    while process.poll() is None:
        if _resident_bytes(process.pid) > limit:
            tripped.set()
            process.kill()
            return
        time.sleep(0.02)


def run_child(
    module: str,
    request: dict[str, Any],
    *,
    timeout: float,
    log_path: Path,
    memory_bytes: int | None = None,
    resident_bytes: int | None = None,
    nice: int = 0,
    progress: Progress | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``module`` as ``python -m`` would, on ``request``, and return its result event.

    The child sets ``memory_bytes`` and ``nice`` on itself before the module runs (no
    ``preexec_fn``: it can deadlock a multithreaded parent).

    Args:
        module: The child's module, run with ``python -m``.
        request: JSON sent on its stdin.
        timeout: Seconds before it is killed.
        log_path: Where its stderr goes.
        memory_bytes: Address-space limit (``RLIMIT_AS``), a hard backstop.
        resident_bytes: Resident-memory limit, watched from here; passing it kills the child
            (``ChildFailed("memory")``).
        nice: Added to its niceness (background work yields the CPU to pages).
        progress: Called with each progress event.
        env: Extra environment variables.

    Raises:
        InferenceError: The child reported one (its own class is re-raised).
        ChildFailed: It timed out, died without answering, went over ``resident_bytes``,
            or hit a bug.
    """
    child_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")])
    )
    tripped = threading.Event()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            _command(module, memory_bytes, nice),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=child_env,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(request))
            process.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; its exit status says how, below
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        if resident_bytes:
            threading.Thread(
                target=_watch_resident, args=(process, resident_bytes, tripped), daemon=True
            ).start()
        try:
            outcome = _follow(lines, progress, time.monotonic() + timeout, timeout)
            returncode = process.wait()
        finally:
            # Timed out, or the caller went away (a Streamlit rerun raises from inside
            # `progress`): never leave a child running.
            if process.poll() is None:
                process.kill()
                process.wait()
    if tripped.is_set():
        raise ChildFailed("memory", f"{resident_bytes}")
    if outcome is None:
        raise ChildFailed("exit", str(returncode))
    if outcome.get("event") == "error":
        kind = error_type(str(outcome.get("type")))
        if kind is None:
            raise ChildFailed("unexpected", str(outcome.get("message", "")))
        raise kind(str(outcome.get("message", "")))
    outcome.pop("event")
    return outcome


def _follow(
    lines: queue.Queue[str | None], progress: Progress | None, deadline: float, timeout: float
) -> dict[str, Any] | None:
    """Relay progress events until stdout closes; return the result or error event."""
    outcome: dict[str, Any] | None = None
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise ChildFailed("timeout", f"{timeout:g}") from None
        if line is None:
            return outcome
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a library printed to stdout
        if not isinstance(event, dict):
            continue
        if event.get("event") in ("result", "error"):
            outcome = event
        elif progress and event.get("event") == "progress":
            progress(str(event.get("message", "")), float(event.get("fraction", 0.0)))
