"""Child processes get their limits without ``preexec_fn``, and the limits still hold.

``preexec_fn`` runs Python between fork and exec; in a multithreaded parent (the
Streamlit server, the REST API) that can deadlock on a lock another thread held
at fork time. The children set their own limits as their first step instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inference.core.child_process import ChildFailed, run_child

ADDRESS_SPACE_BYTES = 1_000_000_000
NICE = 5

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="address-space limits and /proc are Linux's"
)


def _probe(folder: Path) -> dict[str, str]:
    """A child module that reads its limits at its top level, before it imports anything else."""
    (folder / "limits_probe.py").write_text(
        "import os\n"
        "LIMITS = open('/proc/self/limits').read()\n"
        "NICE = os.nice(0)\n"
        "import sys\n"
        "from inference.core.child_process import serve\n"
        "sys.exit(serve(lambda request: {'limits': LIMITS, 'nice': NICE}))\n"
    )
    return {"PYTHONPATH": str(folder)}


def _address_space_limit(limits: str) -> tuple[str, str]:
    (line,) = [line for line in limits.splitlines() if line.startswith("Max address space")]
    soft, hard = line.split()[3:5]
    return soft, hard


def test_children_start_without_preexec_fn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        seen.append(kwargs)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)

    result = run_child(
        "limits_probe",
        {},
        timeout=60,
        log_path=tmp_path / "log",
        memory_bytes=ADDRESS_SPACE_BYTES,
        nice=NICE,
        env=_probe(tmp_path),
    )

    assert result["nice"] == min(os.nice(0) + NICE, 19)
    (kwargs,) = seen
    assert kwargs.get("preexec_fn") is None, "a child was started with preexec_fn"


def test_a_child_sets_its_limits_before_its_module_runs(tmp_path: Path) -> None:
    env = _probe(tmp_path)

    limited = run_child(
        "limits_probe",
        {},
        timeout=60,
        log_path=tmp_path / "log",
        memory_bytes=ADDRESS_SPACE_BYTES,
        nice=NICE,
        env=env,
    )
    free = run_child("limits_probe", {}, timeout=60, log_path=tmp_path / "log", env=env)

    assert _address_space_limit(limited["limits"]) == (str(ADDRESS_SPACE_BYTES),) * 2
    assert limited["nice"] == min(os.nice(0) + NICE, 19)
    assert _address_space_limit(free["limits"]) == _address_space_limit(
        Path("/proc/self/limits").read_text()
    )
    assert free["nice"] == os.nice(0)


def test_a_child_over_its_address_space_limit_cannot_allocate(tmp_path: Path) -> None:
    log = tmp_path / "hog.log"
    fits = run_child("tests.helpers.memory_hog", {"megabytes": 50, "hold_s": 0}, timeout=60,
                     log_path=log, memory_bytes=ADDRESS_SPACE_BYTES)  # fmt: skip
    assert fits["bytes"] == 50_000_000

    with pytest.raises(ChildFailed) as failure:
        run_child("tests.helpers.memory_hog", {"megabytes": 1500, "hold_s": 0}, timeout=60,
                  log_path=log, memory_bytes=ADDRESS_SPACE_BYTES)  # fmt: skip
    assert failure.value.reason == "unexpected" and "MemoryError" in failure.value.detail
