"""The machine this runs on: cores, resident memory, and a one-line description."""

from __future__ import annotations

import os
import platform

__all__ = ["default_threads", "machine", "resident_bytes"]


def default_threads() -> int:
    """CPU cores this process may use (LiteRT itself defaults to one thread)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def machine() -> str:
    """CPU model, usable cores and Python version, for benchmark reports."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(
                line.split(":", 1)[1].strip() for line in file if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {default_threads()} cores available, Python {platform.python_version()}"
