"""The machine this runs on: cores, resident memory, and a one-line description."""

from __future__ import annotations

import os
import platform

__all__ = ["SIMD_MEANING", "default_threads", "int8_outlook", "machine", "resident_bytes", "simd"]

SIMD_MEANING: dict[str, str] = {
    "avx2": "AVX2: 256-bit SIMD; without VNNI, int8 products widen to 16 bits: about fp32 speed",
    "fma": "FMA: fused multiply-add for the float kernels",
    "avx512f": "AVX-512: 512-bit registers, twice AVX2's width",
    "avx512_vnni": "AVX-512 VNNI: one-instruction int8 dot products (vpdpbusd)",
    "avx_vnni": "AVX-VNNI: the same int8 dot products on 256-bit registers",
    "amx_int8": "AMX: int8 matrix tiles (Sapphire Rapids and later)",
    "asimddp": "NEON dot product (ARM sdot/udot): one-instruction int8 dot products",
    "i8mm": "ARM int8 matrix multiply (smmla)",
}
"""The instruction-set features that decide int8 against fp32 speed, as named in cpuinfo."""
_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


THREADS_ENV = "QUANTLENS_THREADS"
"""LiteRT threads per runner when nothing else says: a whole number; unset, every core this
process may use. For a machine shared with other work (a test runner's workers, a container
that sees more cores than it gets)."""


def default_threads() -> int:
    """$QUANTLENS_THREADS, else the CPU cores this process may use (LiteRT's own default is 1)."""
    configured = os.environ.get(THREADS_ENV, "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
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
    features = ", ".join(simd()) or "no SIMD features read"
    return (
        f"{cpu} ({features}), {default_threads()} cores available, "
        f"Python {platform.python_version()}"
    )


def simd(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The :data:`SIMD_MEANING` features this CPU has, from ``/proc/cpuinfo`` (Linux)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as file:
                cpuinfo = file.read()
        except OSError:
            return ()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            flags.update(value.split())
    return tuple(name for name in SIMD_MEANING if name in flags)


def int8_outlook(features: tuple[str, ...]) -> str:
    """What the features mean for int8 speed here, in one sentence."""
    if any(name in features for name in _DOT_PRODUCT):
        dot = next(name for name in _DOT_PRODUCT if name in features)
        return (
            f"This CPU has int8 dot-product instructions ({dot}): expect int8 to beat fp32 "
            "(Lite0 int8/fp32 measured 0.44-0.67x on AVX-512 VNNI machines)."
        )
    if "avx2" in features:
        return (
            "This CPU has AVX2 but no int8 dot-product instructions (VNNI): expect int8 about "
            "as fast as fp32 (Lite0 int8/fp32 measured 1.07x on an AVX2-only AMD Zen 3); "
            "int8 still gives a 4x smaller file."
        )
    return "No known SIMD features read from this CPU: int8 speed cannot be predicted."
