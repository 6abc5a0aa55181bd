"""Shared fixtures and helpers: real photos, a conversion cache, runners built once, the CLI.

``python -m pytest -m "not slow"`` runs the fast tests alone (no conversion,
no training). A test is slow when it needs a converted or trained model: the
hook below marks every test that uses one of :data:`SLOW_FIXTURES`, and
modules that need them throughout carry ``pytestmark = pytest.mark.slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference import Runner, Variant, get_spec, load_runner
from inference.core.paths import CACHE_ENV
from inference.core.specs import TFLITE_VARIANTS
from inference.engine.convert import ensure_variants

CAT_CLASSES = {"tabby", "tiger_cat", "Egyptian_cat"}
COFFEE_CLASSES = {"espresso", "cup"}
LITE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
REPO_ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_S = 600
SLOW_FIXTURES = {"runners", "colour_model"}
"""Fixtures that convert models (the session's runner pool) or train one."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m inference ARGS`` as a user runs it, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "inference", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        timeout=CLI_TIMEOUT_S,
    )


def assert_one_error_line(
    result: subprocess.CompletedProcess[str], status: int, *parts: str
) -> None:
    """The CLI's error contract: one ``error: ...`` line on stderr, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for part in parts:
        assert part in lines[0]
