"""Class names: the ImageNet list shipped in assets/, and labels files people bring."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from inference.core.errors import InputError
from inference.core.paths import ASSETS_DIR

__all__ = ["MAX_LABELS_BYTES", "imagenet_labels", "read_labels"]

IMAGENET_INDEX = ASSETS_DIR / "imagenet_class_index.json"
MAX_LABELS_BYTES = 5_000_000


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names, index-aligned (Keras' imagenet_class_index.json)."""
    index = json.loads(IMAGENET_INDEX.read_text(encoding="utf-8"))
    return tuple(index[str(i)][1] for i in range(len(index)))


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Read a labels file: one label per line, blank lines at the ends ignored.

    Raises:
        InputError: The file is missing, not UTF-8 text, too large, or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such labels file; expected a text file, one label per line")
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise InputError(
            f"{path}: a labels file over {MAX_LABELS_BYTES // 1_000_000} MB is refused"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: expected UTF-8 text, one label per line") from None
    labels = tuple(line.strip() for line in text.strip().splitlines())
    if not labels:
        raise InputError(f"{path}: the labels file is empty; expected one label per line")
    return labels
