"""Where things live: the repository's assets, the conversion cache, Keras' download cache.

Base layer: imports nothing of ours.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ASSETS_DIR",
    "CACHE_ENV",
    "REPO_ROOT",
    "SAMPLES_DIR",
    "VARIANTS_ENV",
    "cache_dir",
    "keras_home",
    "variants_dir",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout; child processes get it on PYTHONPATH so they import this package."""
ASSETS_DIR = REPO_ROOT / "assets"
SAMPLES_DIR = ASSETS_DIR / "samples"
CACHE_ENV = "QUANTLENS_CACHE_DIR"
VARIANTS_ENV = "QUANTLENS_VARIANTS_DIR"


def cache_dir() -> Path:
    """The folder of converted ``.tflite`` files (``$QUANTLENS_CACHE_DIR``, made on demand)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "quantlens"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def variants_dir() -> Path:
    """Where recipes saved with ``quantize --name`` live (``$QUANTLENS_VARIANTS_DIR``).

    By default inside the cache; set it to keep saved recipes apart from files
    that can be rebuilt (or, in tests, to give each worker its own).
    """
    root = os.environ.get(VARIANTS_ENV)
    return Path(root).expanduser() if root else cache_dir() / "variants"


def keras_home() -> Path:
    """Keras' cache folder, resolved as Keras itself does, without importing it."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"])
    home = Path.home()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
