"""Representative data for full-integer quantization.

The int8 converter measures each activation's range on sample inputs; real
photos give ranges that real photos will hit. ``assets/calibration`` ships ten
public-domain/CC0 photos (see ``assets/ATTRIBUTION.md``); callers can pass
their own. Each photo yields several views (crops and mirror images) so that
a small set still covers the scales and positions the model will see.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import ImageOps

from inference.core.errors import InputError
from inference.core.paths import ASSETS_DIR
from inference.core.specs import Preprocessing
from inference.formats.images import decode_image, image_files, preprocess

__all__ = ["CALIBRATION_DIR", "calibration_id", "calibration_images", "representative_samples"]

CALIBRATION_DIR = ASSETS_DIR / "calibration"
CROP_FRACTIONS = (1.0, 0.875, 0.6)


def calibration_images(paths: Sequence[str | Path] | None = None) -> list[Path]:
    """The calibration photos: ``paths`` (files or folders) or the bundled set.

    Raises:
        InputError: No image files were found.
    """
    roots = [Path(p) for p in paths] if paths else [CALIBRATION_DIR]
    images: list[Path] = []
    for root in roots:
        if root.is_dir():
            images.extend(image_files(root, recursive=True))
        elif root.is_file():
            images.append(root)
        else:
            raise InputError(f"{root}: no such calibration file or folder")
    if not images:
        raise InputError(f"no calibration images found in {', '.join(map(str, roots))}")
    return images


def calibration_id(images: Sequence[Path]) -> str:
    """A digest of the images' bytes, so a new calibration set gives new int8 files.

    Asked on every page rerun and API call (it is part of the int8 cache key), so
    the bytes are hashed once per set of (path, size, mtime).
    """
    return _digest(tuple(sorted((str(p), *_stamp(p)) for p in images)))


def _stamp(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _digest(stamped: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stamped:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


def representative_samples(spec: Preprocessing, images: Sequence[Path]) -> Iterator[np.ndarray]:
    """Yield ``(1, H, W, C)`` float32 inputs: crops and mirror images of each photo."""
    for path in images:
        image = decode_image(path, color_mode=spec.color_mode)
        for fraction in CROP_FRACTIONS:
            view_spec = dataclasses.replace(spec, crop_fraction=fraction)
            yield preprocess(image, view_spec)
            yield preprocess(ImageOps.mirror(image), view_spec)
