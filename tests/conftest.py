"""Shared fixtures: real photos, a conversion cache for the session, runners built once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference import Runner, Variant, get_spec, load_runner
from inference.convert import CACHE_ENV, ensure_variants
from inference.specs import TFLITE_VARIANTS

CAT_CLASSES = {"tabby", "tiger_cat", "Egyptian_cat"}
COFFEE_CLASSES = {"espresso", "cup"}
LITE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def conversion_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Converted variants for the whole session.

    An existing $QUANTLENS_CACHE_DIR is reused (fast local reruns); CI starts
    from an empty folder, so the suite exercises real conversions.
    """
    existing = os.environ.get(CACHE_ENV)
    path = Path(existing) if existing else tmp_path_factory.mktemp("tflite-cache")
    os.environ[CACHE_ENV] = str(path)
    yield path
    if existing is None:
        os.environ.pop(CACHE_ENV, None)


def _skimage_photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's real photos as PNG files: chelsea (a cat), coffee, astronaut."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(_skimage_photo(name)).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="session")
def chelsea(photo_dir: Path) -> Path:
    return photo_dir / "chelsea.png"


@pytest.fixture(scope="session")
def coffee(photo_dir: Path) -> Path:
    return photo_dir / "coffee.png"


class RunnerPool:
    """Loads each (model, variant) once per session; conversion runs once per model."""

    def __init__(self) -> None:
        self._runners: dict[tuple[str, Variant], Runner] = {}

    def get(self, model: str, variant: Variant | str) -> Runner:
        variant = Variant(variant)
        key = (model, variant)
        if key not in self._runners:
            spec = get_spec(model)
            if variant.is_tflite:
                ensure_variants(spec, TFLITE_VARIANTS)  # one converter process for all four
            self._runners[key] = load_runner(spec, variant)
        return self._runners[key]

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()


@pytest.fixture(scope="session")
def runners() -> Iterator[RunnerPool]:
    pool = RunnerPool()
    yield pool
    pool.close()
