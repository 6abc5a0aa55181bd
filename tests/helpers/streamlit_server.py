"""``streamlit run streamlit_app.py`` on a free loopback port, for tests that need a real server.

Started with the given environment, stopped by this context manager alone (its
own process, never by name); its output goes to ``log_path``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 120
STREAMLIT_RUN = (sys.executable, "-m", "streamlit", "run", "streamlit_app.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(process: subprocess.Popen, base: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with {process.returncode}; see {log_path}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{base}/api/health", timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer /api/health in time; see {log_path}")


@contextlib.contextmanager
def streamlit_server(
    env: Mapping[str, str],
    log_path: Path,
    *,
    options: Sequence[str] = (),
    unset: Sequence[str] = (),
) -> Iterator[str]:
    """The server's base URL while the block runs, listening on 127.0.0.1 only.

    ``env`` is added to this process's environment and ``unset`` taken out of it;
    ``options`` are more ``streamlit run`` options.
    """
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                *STREAMLIT_RUN,
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                *options,
            ],
            cwd=REPO_ROOT,
            env={k: v for k, v in {**os.environ, **env}.items() if k not in unset},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(process, base, log_path)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
