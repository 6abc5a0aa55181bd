"""Shared fixtures and helpers: real photos, a conversion cache, runners built once, the CLI.

``python -m pytest -m "not slow"`` runs the fast tests alone (no conversion,
no training). A test is slow when it needs a converted or trained model: the
hook below marks every test that uses one of :data:`SLOW_FIXTURES`, and
modules that need them throughout carry ``pytestmark = pytest.mark.slow``.

The session converts into a fresh temporary folder, never the cache the app
uses ($QUANTLENS_CACHE_DIR is ignored). For fast local reruns, name a folder
kept for tests in $QUANTLENS_TEST_CACHE; the tests mark it as theirs and refuse
a non-empty folder they did not make. :func:`isolated_state` resets what a test
may leave behind in the process (shared runners, background conversions, the
API's rate limit) and in the cache (saved variants), after every test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api import guard
from inference import Runner, Variant, get_spec, load_runner
from inference.core.paths import CACHE_ENV, VARIANTS_ENV, variants_dir
from inference.engine.convert import ensure_variants
from inference.registry.background_conversions import CONVERSIONS
from inference.registry.runner_cache import RUNNERS

CAT_CLASSES = {"tabby", "tiger_cat", "Egyptian_cat"}
COFFEE_CLASSES = {"espresso", "cup"}
LITE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
REPO_ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT_S = 600
SLOW_FIXTURES = {"runners", "colour_model"}
"""Fixtures that convert models (the session's runner pool) or train one."""
TEST_CACHE_ENV = "QUANTLENS_TEST_CACHE"
XDIST_WORKER_ENV = "PYTEST_XDIST_WORKER"
"""A folder kept for the tests' conversions between runs (opt-in; default: a fresh one)."""
TEST_CACHE_MARK = ".quantlens-test-cache"
"""Written in a $QUANTLENS_TEST_CACHE folder: the tests made it, so they may clear parts of it."""
CONVERSION_WAIT_S = 600
"""How long a test's teardown waits for background conversions it left running."""


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one compute thread each (LiteRT, TensorFlow, and the
    # servers and clusters they start), so threads do not outnumber the cores.
    for _name in ("QUANTLENS_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                  "OMP_NUM_THREADS"):  # fmt: skip
        os.environ.setdefault(_name, "1")


LONG_FILES = (
    "test_scale_out.py",
    "test_app.py",
    "test_e2e.py",
    "test_damage.py",
    "test_reliability.py",
    "test_zoo.py",
    "test_models.py",
    "test_quantize.py",
    "test_memory_bounds.py",
)
"""The modules that take half a minute or more, longest first: the two xdist workers take
whole files in collection order (two each to start, alternately), and a long file started
last would leave one worker alone while the short ones fill the end. The Ray cluster's
module and the browser's (both many processes) go to one worker, one after the other, so
they never fight for the two cores."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

    # Stable and the same in every worker (xdist checks): long files first, then the rest.
    def order(item: pytest.Item) -> int:
        name = item.path.name
        return LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)

    items.sort(key=order)


def _test_cache(folder: str) -> Path:
    """The $QUANTLENS_TEST_CACHE folder, made or claimed for the tests.

    A folder that holds files but no :data:`TEST_CACHE_MARK` is someone's own
    cache: the tests would delete its saved variants, so they stop instead.
    """
    path = Path(folder).expanduser().resolve()
    if path.is_dir() and any(path.iterdir()) and not (path / TEST_CACHE_MARK).is_file():
        pytest.exit(
            f"{TEST_CACHE_ENV}={path} holds files the tests did not make (the app's own "
            "cache?), and the tests clear parts of it: name a "
            f"new or empty folder, or create {path / TEST_CACHE_MARK} to let them",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    path.mkdir(parents=True, exist_ok=True)
    (path / TEST_CACHE_MARK).touch()
    return path


@pytest.fixture(scope="session", autouse=True)
def conversion_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Converted variants for the whole session, in a folder of the tests' own.

    A fresh temporary folder, so CI exercises real conversions; or, for fast local
    reruns, the folder named by $QUANTLENS_TEST_CACHE (opt-in). Never the
    developer's $QUANTLENS_CACHE_DIR: tests clear parts of the cache.
    """
    chosen = os.environ.get(TEST_CACHE_ENV)
    if chosen:
        path = _test_cache(chosen)
    elif os.environ.get(XDIST_WORKER_ENV):
        # pytest-xdist workers share one cache (a file lock per model keeps them from
        # converting the same model twice); their temporary folders share a parent.
        path = tmp_path_factory.getbasetemp().parent / "tflite-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("tflite-cache")
    # Saved recipes are each worker's own: tests save and clear them.
    saved = tmp_path_factory.mktemp("saved-variants")
    previous = {name: os.environ.get(name) for name in (CACHE_ENV, VARIANTS_ENV)}
    os.environ[CACHE_ENV], os.environ[VARIANTS_ENV] = str(path), str(saved)
    yield path
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


PRECONVERTED = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""Models whose every TFLite variant many slow tests use: converted at the session's start."""
PRECONVERT_WAIT_S = 900


@pytest.fixture(scope="session", autouse=True)
def preconverted(conversion_cache: Path, request: pytest.FixtureRequest) -> Iterator[None]:
    """Convert the Lite models' variants in another process while the first tests run.

    The suite runs on one core; conversion is most of its time. A child process
    (its own environment, so no test's monkeypatched cache can redirect it) makes
    them on the other core; a test that needs a file first waits on the model's
    file lock and then finds it made. Only when slow tests are selected.
    """
    first_worker = os.environ.get(XDIST_WORKER_ENV, "gw0") == "gw0"
    if not first_worker or not any(i.get_closest_marker("slow") for i in request.session.items):
        yield
        return
    script = "; ".join(
        [
            "from inference import get_spec",
            "from inference.core.specs import TFLITE_VARIANTS",
            "from inference.engine.convert import ensure_variants",
            *(f"ensure_variants(get_spec({m!r}), TFLITE_VARIANTS)" for m in PRECONVERTED),
        ]
    )
    with open(conversion_cache / "preconvert.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env={**os.environ, CACHE_ENV: str(conversion_cache)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield
        finally:
            try:
                process.wait(timeout=PRECONVERT_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(autouse=True)
def isolated_state(conversion_cache: Path) -> Iterator[None]:
    """After each test: no shared runner, background conversion, rate-limit bucket or saved
    variant is left for the next one.

    The process-wide registries the app's pages and API share
    (``inference.registry.runner_cache.RUNNERS``,
    ``inference.registry.background_conversions.CONVERSIONS``, ``api.guard.LIMITER``)
    are emptied, and the session cache's saved-variants registry removed. A
    background conversion still running is waited for first, so it cannot write
    into the next test's cache.
    """
    yield
    for job in CONVERSIONS.clear():
        job.done.wait(CONVERSION_WAIT_S)
    RUNNERS.clear()
    guard.LIMITER.clear()
    shutil.rmtree(variants_dir(), ignore_errors=True)


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
    """Loads each (model, variant) once per session, converting only the variants asked for.

    :meth:`convert` makes several variants of a model in one converter run (one
    calibration for int8 and int16x8), for a test or module that needs them all.
    """

    def __init__(self) -> None:
        self._runners: dict[tuple[str, Variant], Runner] = {}

    def convert(self, model: str, variants: Iterable[Variant | str]) -> dict[Variant, Path]:
        """The cached files of ``model``'s TFLite ``variants``; the missing ones made in one run.

        The Keras original needs no file and is left out.
        """
        wanted = [v for v in map(Variant, variants) if v.is_tflite]
        return ensure_variants(get_spec(model), wanted) if wanted else {}

    def path(self, model: str, variant: Variant | str) -> Path:
        """The cached file of one TFLite variant (converted if needed), without loading it."""
        return self.convert(model, [variant])[Variant(variant)]

    def get(self, model: str, variant: Variant | str) -> Runner:
        variant = Variant(variant)
        key = (model, variant)
        if key not in self._runners:
            if variant.is_tflite:
                self.convert(model, [variant])
            self._runners[key] = load_runner(get_spec(model), variant)
        return self._runners[key]

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()


@pytest.fixture(scope="session")
def runners() -> Iterator[RunnerPool]:
    pool = RunnerPool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def brought_lite0(runners: RunnerPool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lite0's float file as someone brings it back: a copy named ``lite0.tflite``.

    One file for the session, so the variants made from it (a model of its own,
    keyed by its content, name, labels and scaling) are made once and shared.
    """
    path = tmp_path_factory.mktemp("brought") / "lite0.tflite"
    shutil.copyfile(runners.path("efficientnet_lite0", Variant.FP32), path)
    return path


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
