"""Make a model's TFLite variants, in child processes, cached on disk.

Two stages, each in its own child process with a time limit (see
:mod:`inference.core.child_process`), so a crash, a hang or a leak never reaches the server:

1. **Keras -> float32 ``.tflite``** with TensorFlow (``inference.engine.workers.convert``);
   skipped when the model *is* a float ``.tflite`` someone brought.
2. **float ``.tflite`` -> every other variant** with Google's ai-edge-quantizer
   (``inference.engine.workers.quantize``), one recipe per variant, without TensorFlow
   and within a memory limit.

Cache files live in ``$QUANTLENS_CACHE_DIR`` (default ``~/.cache/quantlens``),
named by model, variant (or recipe) and a digest of everything that shapes the
result: the weights, the TensorFlow/Keras versions (float file), the recipe's
content, the quantizer's version and, for recipes that calibrate, the
calibration set. Each file has a sidecar ``.json`` with the recipe that made
it and how long that took. Files are written under a temporary name and
renamed, so a half-written file is never served; an invalid file is rebuilt.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inference.core.child_process import ChildFailed, Progress, run_child, write_atomically
from inference.core.errors import ConversionError, InputError
from inference.core.paths import CACHE_ENV, cache_dir
from inference.core.specs import AnyVariant, ModelSpec, RecipeVariant, Variant
from inference.formats.browser_file import browser_file
from inference.formats.calibration import calibration_id, calibration_images
from inference.formats.recipes import Recipe, variant_recipe
from inference.formats.tflite_file import is_valid
from inference.formats.tflite_metadata import describe_spec

__all__ = [
    "CACHE_ENV",
    "QUOTA_ENV",
    "TIMEOUT_ENV",
    "browser_path",
    "cache_quota",
    "cache_usage",
    "conversion_record",
    "enforce_quota",
    "ensure_recipe",
    "ensure_variants",
    "float_path",
    "is_converted",
    "lower_priority",
    "recipe_path",
    "variant_path",
]

TIMEOUT_ENV = "QUANTLENS_CONVERT_TIMEOUT"
QUOTA_ENV = "QUANTLENS_CACHE_QUOTA_MB"
EVICTION_GRACE_S = 60.0
"""Files used this recently are never evicted."""
CUSTOM_PREFIX = "custom_"
"""Names of models people upload start with it (see ``inference.registry.user_models``)."""
CONVERTER_VERSION = 3
"""Bump when the Keras -> float conversion changes, to invalidate cached files."""
QUANTIZER_VERSION = 2
"""Bump when the quantization stage changes (calibration, I/O), to invalidate cached files."""
DEFAULT_TIMEOUT_S = 900.0
QUANTIZER_MEMORY_BYTES = 4 * 1024**3
"""Address space of the quantizer child: LiteRT keeps every tensor while calibrating."""


_NICE: contextvars.ContextVar[int] = contextvars.ContextVar("quantlens_nice", default=0)


@contextmanager
def lower_priority(nice: int = 10) -> Iterator[None]:
    """Children started inside run ``nice`` steps lower (background work yields to pages)."""
    token = _NICE.set(nice)
    try:
        yield
    finally:
        _NICE.reset(token)


@functools.cache  # asked for on every cache-path lookup (each page rerun); fixed per process
def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def float_path(spec: ModelSpec) -> Path:
    """The float32 ``.tflite`` every other variant is made from."""
    if spec.is_tflite_file:
        if Variant.FP32 not in spec.variants or spec.path is None:
            raise InputError(f"{spec.title} is already quantized; it runs only as itself")
        return spec.path
    key = {
        "model": spec.name,
        "weights": spec.fingerprint,
        "tensorflow": f"{_version('tensorflow')}/{_version('tensorflow-cpu')}",
        "keras": _version("keras"),
        "converter": CONVERTER_VERSION,
        "metadata": _digest(describe_spec(spec)),
    }
    return cache_dir() / f"{spec.name}-fp32-{_digest(key)}.tflite"


def _label(recipe: Recipe) -> str:
    return re.sub(r"[^0-9a-z]+", "-", recipe.name.lower()).strip("-")[:40] or "recipe"


def recipe_path(spec: ModelSpec, recipe: Recipe, calibration: Sequence[Path] | None = None) -> Path:
    """Where the file that ``recipe`` makes from ``spec``'s float model is cached."""
    key: dict[str, Any] = {
        "float": float_path(spec).name if not spec.is_tflite_file else spec.fingerprint,
        "recipe": recipe.text,
        "quantizer": f"{_version('ai-edge-quantizer')}/{QUANTIZER_VERSION}",
        "metadata": _digest(describe_spec(spec)),
    }
    if recipe.needs_calibration:
        key["calibration"] = calibration_id(calibration_set(spec, calibration))
        key["preprocessing"] = dataclasses.asdict(spec.preprocessing)
    if recipe.ranges:
        key["ranges"] = recipe.ranges
    return cache_dir() / f"{spec.name}-{_label(recipe)}-{_digest(key)}.tflite"


def _own_calibration(
    variant: AnyVariant, calibration: Sequence[Path] | None
) -> Sequence[Path] | None:
    """The caller's calibration images, else those a saved recipe variant was made with."""
    if calibration or not isinstance(variant, RecipeVariant) or not variant.calibration:
        return calibration
    return [Path(p) for p in variant.calibration]


def variant_path(
    spec: ModelSpec, variant: AnyVariant, calibration: Sequence[Path] | None = None
) -> Path:
    """Where the file of ``spec`` as ``variant`` lives."""
    if variant is Variant.FP32:
        return float_path(spec)
    if spec.is_tflite_file and variant is spec.variants[0]:
        assert spec.path is not None
        return spec.path
    return recipe_path(spec, variant_recipe(variant), _own_calibration(variant, calibration))


def browser_path(spec: ModelSpec, variant: AnyVariant) -> Path:
    """The variant's file as LiteRT.js runs it (batch 1, float interface), made once and kept.

    Raises:
        InputError: The variant is not converted yet (call :func:`ensure_variants` first).
    """
    source = variant_path(spec, variant)
    if not is_valid(source):
        raise InputError(f"{spec.name} {variant} is not converted yet")
    target = cache_dir() / "web" / source.name
    if not is_valid(target) or target.stat().st_mtime_ns < source.stat().st_mtime_ns:
        target.parent.mkdir(exist_ok=True)
        write_atomically(target, browser_file(source.read_bytes()))
    return target


def calibration_set(spec: ModelSpec, calibration: Sequence[Path] | None) -> list[Path]:
    """The caller's calibration images, else the model's own set, else the bundled photos."""
    if calibration:
        return calibration_images(calibration)
    return calibration_images([spec.calibration_dir] if spec.calibration_dir else None)


def is_converted(spec: ModelSpec, variant: AnyVariant) -> bool:
    """Whether a valid file exists (with the default calibration set for calibrated recipes)."""
    if not variant.is_tflite or variant not in spec.variants:
        return False
    return is_valid(variant_path(spec, variant))


def conversion_record(path: Path) -> dict[str, Any]:
    """The sidecar of a cached file: ``recipe`` (rules), ``recipe_name`` and ``seconds``."""
    sidecar = path.with_suffix(".json")
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


@contextmanager
def _model_lock(spec: ModelSpec) -> Iterator[None]:
    """One conversion per model at a time, across threads and processes."""
    with open(cache_dir() / f"{spec.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _timeout(timeout: float | None) -> float:
    return timeout or float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))


def ensure_variants(
    spec: ModelSpec,
    variants: Sequence[AnyVariant | str],
    *,
    progress: Progress | None = None,
    calibration: Sequence[Path] | None = None,
    timeout: float | None = None,
) -> dict[AnyVariant, Path]:
    """Return the cached ``.tflite`` file of each variant, making the missing ones.

    Args:
        spec: A zoo spec, a custom Keras spec, or a float ``.tflite`` someone brought.
        variants: TFLite variants to make available (or their names), saved recipe
            variants included: each is made with its own calibration set unless
            ``calibration`` is given.
        progress: Called with (message, fraction done) as the stages proceed.
        calibration: Images or folders for calibrated recipes (default: the model's set).
        timeout: Seconds before a child process is killed
            (default ``$QUANTLENS_CONVERT_TIMEOUT`` or 900).

    Raises:
        ConversionError: A stage failed, crashed or timed out.
        ModelUnavailableError: The model's weights cannot be obtained.
        InputError: A variant is not a TFLite one, or not offered by this model.
    """
    for name in variants:
        if name == Variant.ORIGINAL:
            raise InputError(f"expected a TFLite variant to convert; received {str(name)!r}")
    wanted = [spec.variant(v) for v in variants]
    if spec.is_tflite_file and wanted == [spec.variants[0]]:
        return {wanted[0]: variant_path(spec, wanted[0])}
    groups: dict[tuple[Path, ...] | None, list[AnyVariant]] = {}
    for variant in wanted:
        if variant.is_quantized:
            own = _own_calibration(variant, calibration)
            groups.setdefault(tuple(own) if own else None, []).append(variant)
    paths: dict[AnyVariant, Path] = {v: float_path(spec) for v in wanted if not v.is_quantized}
    if not groups:
        _ensure(spec, [], progress, calibration, timeout)
    for images, members in groups.items():
        recipes = {v: variant_recipe(v) for v in members}
        made = _ensure(spec, list(recipes.values()), progress, images, timeout)
        paths.update({v: made[recipes[v]] for v in members})
    return {v: paths[v] for v in wanted}


def ensure_recipe(
    spec: ModelSpec,
    recipe: Recipe,
    *,
    progress: Progress | None = None,
    calibration: Sequence[Path] | None = None,
    timeout: float | None = None,
) -> Path:
    """Make (or find) the file ``recipe`` gives from ``spec``'s float model."""
    return _ensure(spec, [recipe], progress, calibration, timeout)[recipe]


def _ensure(
    spec: ModelSpec,
    recipes: list[Recipe],
    progress: Progress | None,
    calibration: Sequence[Path] | None,
    timeout: float | None,
) -> dict[Recipe, Path]:
    source = float_path(spec)
    needs_images = any(r.needs_calibration for r in recipes)
    images = calibration_set(spec, calibration) if needs_images else []
    paths = {r: recipe_path(spec, r, images or None) for r in recipes}
    if is_valid(source) and all(is_valid(p) for p in paths.values()):
        # Files are written atomically, so a valid one is complete: no need to wait for
        # the model's lock, which a background conversion of other variants may hold.
        _mark_used([source, *paths.values()])
        return paths
    with _model_lock(spec):
        missing = {r: p for r, p in paths.items() if not is_valid(p)}
        for path in missing.values():
            path.unlink(missing_ok=True)  # a corrupt leftover is rebuilt, never served
        built_float = False
        if not spec.is_tflite_file and not is_valid(source):
            source.unlink(missing_ok=True)
            _convert_float(spec, source, progress, timeout)
            built_float = True
        if missing:
            _quantize(spec, source, missing, images, progress, timeout)
    if not is_valid(source):
        raise ConversionError(f"{spec.name} fp32: the converter wrote no valid file")
    for recipe, path in paths.items():
        if not is_valid(path):
            raise ConversionError(f"{spec.name} {recipe.name}: the quantizer wrote no valid file")
    if (missing or built_float) and progress:
        progress("ready", 1.0)
    _mark_used([source, *paths.values()])
    if missing or built_float:
        enforce_quota()
    return paths


def _mark_used(paths: Sequence[Path]) -> None:
    """Record a use in each file's access time (its modification time stays: it keys caches)."""
    now = time.time_ns()
    folder = cache_dir()
    for path in paths:
        if path.parent == folder:  # never a file someone brought
            with contextlib.suppress(OSError):
                os.utime(path, ns=(now, path.stat().st_mtime_ns))


def cache_quota() -> int | None:
    """``$QUANTLENS_CACHE_QUOTA_MB`` in bytes, or None (no quota)."""
    try:
        megabytes = float(os.environ.get(QUOTA_ENV, ""))
    except ValueError:
        return None
    return int(megabytes * 1e6) if megabytes > 0 else None


def _evictable(path: Path) -> bool:
    """Made from someone's uploaded model, or by a recipe that is not built in."""
    if path.name.startswith(CUSTOM_PREFIX):
        return True
    name = conversion_record(path).get("recipe_name")
    return isinstance(name, str) and name not in {v.value for v in Variant}


def cache_usage() -> tuple[int, int]:
    """Bytes of ``.tflite`` files in the cache, and how many of them may be evicted."""
    files = list(cache_dir().glob("*.tflite"))
    return sum(p.stat().st_size for p in files), sum(_evictable(p) for p in files)


def enforce_quota(quota: int | None = None) -> list[Path]:
    """Delete the least recently used evictable files until the cache fits its quota.

    Only variants of uploaded models and of recipes that are not built in are
    evicted (the zoo's built-in variants never are), and none used in the last
    :data:`EVICTION_GRACE_S` seconds, so a file a session has just been handed
    is not pulled from under it. An evicted file is rebuilt from its recipe
    when it is next asked for.

    Returns:
        The files deleted.
    """
    quota = quota if quota is not None else cache_quota()
    if quota is None:
        return []
    files = []
    for path in cache_dir().glob("*.tflite"):
        try:
            files.append((path, path.stat()))
        except OSError:
            continue
    total = sum(status.st_size for _, status in files)
    recent = time.time() - EVICTION_GRACE_S
    candidates = sorted(
        (status.st_atime, path, status.st_size)
        for path, status in files
        if status.st_atime < recent and _evictable(path)
    )
    evicted = []
    for _, path, size in candidates:
        if total <= quota:
            break
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
        total -= size
        evicted.append(path)
    return evicted


def _child_error(failure: ChildFailed, what: str, limit: float, log: Path) -> ConversionError:
    if failure.reason == "timeout":
        return ConversionError(
            f"{what} took longer than {limit:.0f} s and was stopped "
            f"(set {TIMEOUT_ENV} to allow more)"
        )
    if failure.reason == "exit":
        return ConversionError(
            f"{what}: the process exited with status {failure.detail}; see {log}"
        )
    return ConversionError(f"{what}: {failure.detail}")


def _convert_float(
    spec: ModelSpec, output: Path, progress: Progress | None, timeout: float | None
) -> None:
    request = {"spec": spec.to_json(), "output": str(output)}
    _stage(spec, "convert", request, progress, timeout)


def _quantize(
    spec: ModelSpec,
    source: Path,
    outputs: dict[Recipe, Path],
    images: Sequence[Path],
    progress: Progress | None,
    timeout: float | None,
) -> None:
    request = {
        "float": str(source),
        "preprocessing": dataclasses.asdict(spec.preprocessing),
        "calibration": [str(p) for p in images],
        "metadata": describe_spec(spec),
        "jobs": [
            {"name": r.name, "rules": r.rules, "ranges": r.ranges, "output": str(p)}
            for r, p in outputs.items()
        ],
    }
    _stage(spec, "quantize", request, progress, timeout, memory_bytes=QUANTIZER_MEMORY_BYTES)


_WORKERS = {
    "convert": "inference.engine.workers.convert",
    "quantize": "inference.engine.workers.quantize",
}
"""The child module of each stage."""


def _stage(
    spec: ModelSpec,
    stage: str,
    request: dict[str, Any],
    progress: Progress | None,
    timeout: float | None,
    memory_bytes: int | None = None,
) -> None:
    """Run the ``stage``'s worker on ``request``; its failure becomes one line."""
    limit = _timeout(timeout)
    log_path = cache_dir() / f"{spec.name}.{stage}.log"
    what = {"convert": "conversion", "quantize": "quantization"}[stage]
    try:
        run_child(
            _WORKERS[stage],
            request,
            timeout=limit,
            log_path=log_path,
            memory_bytes=memory_bytes,
            progress=progress,
            nice=_NICE.get(),
        )
    except ChildFailed as failure:
        raise _child_error(failure, f"{spec.name}: {what}", limit, log_path) from None
