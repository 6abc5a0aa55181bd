"""Convert Keras models to TFLite variants, in a child process, cached on disk.

The converter leaks memory on every call (TF 2.20/2.21, tensorflow#122598) and
can crash or hang, so it never runs in the serving process: ``ensure_variants``
starts ``python -m inference.convert_worker`` with a time limit (see
:mod:`inference.child`), relays its progress, and finds the files in the cache
afterwards.

Cache files live in ``$QUANTLENS_CACHE_DIR`` (default ``~/.cache/quantlens``),
named by model, variant and a digest of everything that shapes the result
(weights identity, TensorFlow and Keras versions, calibration set). Files are
written under a temporary name and renamed, so a half-written file is never
served; a file that is not a valid TFLite flatbuffer is rebuilt.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inference.calibration import calibration_id, calibration_images
from inference.child import ChildFailed, Progress, run_child
from inference.errors import ConversionError, InputError
from inference.paths import CACHE_ENV, cache_dir
from inference.specs import ModelSpec, Variant
from inference.tflite_file import is_valid

__all__ = [
    "CACHE_ENV",
    "TIMEOUT_ENV",
    "ensure_variants",
    "is_converted",
    "variant_path",
]

TIMEOUT_ENV = "QUANTLENS_CONVERT_TIMEOUT"
CONVERTER_VERSION = 1
"""Bump when the conversion recipe changes, to invalidate cached files."""
DEFAULT_TIMEOUT_S = 900.0


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def variant_path(
    spec: ModelSpec, variant: Variant, calibration: Sequence[Path] | None = None
) -> Path:
    """Where the cached file for ``spec`` as ``variant`` lives."""
    key: dict[str, Any] = {
        "model": spec.name,
        "weights": spec.fingerprint,
        "variant": variant.value,
        "tensorflow": f"{_version('tensorflow')}/{_version('tensorflow-cpu')}",
        "keras": _version("keras"),
        "converter": CONVERTER_VERSION,
    }
    if variant is Variant.INT8:
        key["calibration"] = calibration_id(calibration_set(spec, calibration))
        key["preprocessing"] = dataclasses.asdict(spec.preprocessing)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"{spec.name}-{variant.value}-{digest}.tflite"


def calibration_set(spec: ModelSpec, calibration: Sequence[Path] | None) -> list[Path]:
    """The caller's calibration images, else the model's own set, else the bundled photos."""
    if calibration:
        return calibration_images(calibration)
    return calibration_images([spec.calibration_dir] if spec.calibration_dir else None)


def is_converted(spec: ModelSpec, variant: Variant) -> bool:
    """Whether a valid cached file exists (with the default calibration set for int8)."""
    return variant.is_tflite and not spec.is_tflite_file and is_valid(variant_path(spec, variant))


@contextmanager
def _model_lock(spec: ModelSpec) -> Iterator[None]:
    """One conversion per model at a time, across threads and processes."""
    with open(cache_dir() / f"{spec.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_variants(
    spec: ModelSpec,
    variants: Sequence[Variant],
    *,
    progress: Progress | None = None,
    calibration: Sequence[Path] | None = None,
    timeout: float | None = None,
) -> dict[Variant, Path]:
    """Return the cached ``.tflite`` file of each variant, converting the missing ones.

    Args:
        spec: A zoo spec or a custom Keras spec.
        variants: TFLite variants to make available.
        progress: Called with (message, fraction done) as conversion proceeds.
        calibration: Images or folders for int8 calibration (default: the model's set).
        timeout: Seconds before the converter process is killed
            (default ``$QUANTLENS_CONVERT_TIMEOUT`` or 900).

    Raises:
        ConversionError: The converter failed, crashed or timed out.
        ModelUnavailableError: The model's weights cannot be obtained.
        InputError: A variant is not a TFLite one, or the model is a ``.tflite`` already.
    """
    wanted = [Variant(v) for v in variants]
    for variant in wanted:
        if not variant.is_tflite:
            raise InputError(f"expected a TFLite variant to convert; received {variant.value!r}")
    if spec.is_tflite_file:
        raise InputError(f"{spec.title} is already a TFLite file; there is nothing to convert")
    images = calibration_set(spec, calibration)
    paths = {v: variant_path(spec, v, images) for v in wanted}
    with _model_lock(spec):
        missing = {v: p for v, p in paths.items() if not is_valid(p)}
        for path in missing.values():
            path.unlink(missing_ok=True)  # a corrupt leftover is rebuilt, never served
        if missing:
            _convert(spec, missing, images, progress, timeout)
    for variant, path in paths.items():
        if not is_valid(path):
            raise ConversionError(f"{spec.name} {variant.value}: the converter wrote no valid file")
    if missing and progress:
        progress("ready", 1.0)
    return paths


def _convert(
    spec: ModelSpec,
    outputs: dict[Variant, Path],
    images: Sequence[Path],
    progress: Progress | None,
    timeout: float | None,
) -> None:
    limit = timeout or float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    log_path = cache_dir() / f"{spec.name}.convert.log"
    request = {
        "spec": spec.to_json(),
        "outputs": {v.value: str(p) for v, p in outputs.items()},
        "calibration": [str(p) for p in images],
    }
    try:
        run_child(
            "inference.convert_worker",
            request,
            timeout=limit,
            log_path=log_path,
            progress=progress,
        )
    except ChildFailed as failure:
        if failure.reason == "timeout":
            raise ConversionError(
                f"{spec.name}: conversion took longer than {limit:.0f} s and was stopped "
                f"(set {TIMEOUT_ENV} to allow more)"
            ) from None
        if failure.reason == "exit":
            raise ConversionError(
                f"{spec.name}: the converter process exited with status {failure.detail}; "
                f"see {log_path}"
            ) from None
        raise ConversionError(f"{spec.name}: {failure.detail}") from None
