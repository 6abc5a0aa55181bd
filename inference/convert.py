"""Convert Keras models to TFLite variants, in a child process, cached on disk.

The converter leaks memory on every call (TF 2.20/2.21, tensorflow#122598) and
can crash or hang, so it never runs in the serving process: ``ensure_variants``
starts ``python -m inference.convert_worker`` with a time limit, reads its
progress as JSON lines, and finds the files in the cache afterwards.

Cache files live in ``$QUANTLENS_CACHE_DIR`` (default ``~/.cache/quantlens``),
named by model, variant and a digest of everything that shapes the result
(weights identity, TensorFlow and Keras versions, calibration set). Files are
written under a temporary name and renamed, so a half-written file is never
served; a file without the TFLite identifier is rebuilt.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inference.calibration import calibration_id, calibration_images
from inference.errors import ConversionError, InputError, ModelUnavailableError
from inference.specs import ModelSpec, Source, Variant
from inference.zoo import ASSETS_DIR

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "ensure_variants",
    "is_converted",
    "variant_path",
]

CACHE_ENV = "QUANTLENS_CACHE_DIR"
TIMEOUT_ENV = "QUANTLENS_CONVERT_TIMEOUT"
CONVERTER_VERSION = 1
"""Bump when the conversion recipe changes, to invalidate cached files."""
DEFAULT_TIMEOUT_S = 900.0
TFLITE_IDENTIFIER = b"TFL3"

Progress = Callable[[str, float], None]


def cache_dir() -> Path:
    """The folder holding converted ``.tflite`` files (created on demand)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "quantlens"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


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
        key["calibration"] = calibration_id(_calibration(spec, calibration))
        key["preprocessing"] = dataclasses.asdict(spec.preprocessing)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"{spec.name}-{variant.value}-{digest}.tflite"


def _calibration(spec: ModelSpec, calibration: Sequence[Path] | None) -> list[Path]:
    """The caller's calibration images, else the model's own set, else the bundled photos."""
    if calibration:
        return calibration_images(calibration)
    return calibration_images([spec.calibration_dir] if spec.calibration_dir else None)


def _is_valid(path: Path) -> bool:
    """A complete TFLite file: the identifier, and a flatbuffer LiteRT's verifier accepts.

    Pages ask on every rerun, so each version of a file (size, mtime) is verified once.
    """
    try:
        status = path.stat()
    except OSError:
        return False
    return _verified(str(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _verified(path: str, size: int, mtime_ns: int) -> bool:
    with open(path, "rb") as file:
        head = file.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        return False
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_path=path)  # verifies offsets; truncation fails here
    except (ValueError, RuntimeError):
        return False
    return True


def is_converted(spec: ModelSpec, variant: Variant) -> bool:
    """Whether a valid cached file exists (with the bundled calibration set for int8)."""
    return variant.is_tflite and _is_valid(variant_path(spec, variant))


@contextmanager
def _model_lock(spec: ModelSpec) -> Iterator[None]:
    """One conversion per model at a time, across threads and processes."""
    lock_path = cache_dir() / f"{spec.name}.lock"
    with open(lock_path, "w") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no cross-process lock
            yield
            return
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
        calibration: Images or folders for int8 calibration (default: bundled set).
        timeout: Seconds before the converter process is killed
            (default ``$QUANTLENS_CONVERT_TIMEOUT`` or 900).

    Raises:
        ConversionError: The converter failed, crashed or timed out.
        ModelUnavailableError: The model's weights cannot be obtained.
    """
    wanted = [Variant(v) for v in variants]
    for variant in wanted:
        if not variant.is_tflite:
            raise InputError(f"expected a TFLite variant to convert; received {variant.value!r}")
    if spec.is_tflite_file:
        raise InputError(f"{spec.title} is already a TFLite file; there is nothing to convert")
    images = _calibration(spec, calibration)
    paths = {v: variant_path(spec, v, images) for v in wanted}
    with _model_lock(spec):
        missing = {v: p for v, p in paths.items() if not _is_valid(p)}
        for path in missing.values():
            path.unlink(missing_ok=True)  # a corrupt leftover is rebuilt, never served
        if missing:
            _run_worker(spec, missing, images, progress, timeout)
    for variant, path in paths.items():
        if not _is_valid(path):
            raise ConversionError(f"{spec.name} {variant.value}: the converter wrote no valid file")
    if missing and progress:
        progress("ready", 1.0)
    return paths


def _run_worker(
    spec: ModelSpec,
    outputs: dict[Variant, Path],
    images: Sequence[Path],
    progress: Progress | None,
    timeout: float | None,
) -> None:
    limit = timeout or float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    request = {
        "spec": _spec_to_json(spec),
        "outputs": {v.value: str(p) for v, p in outputs.items()},
        "calibration": [str(p) for p in images],
    }
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    repo_root = str(ASSETS_DIR.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    log_path = cache_dir() / f"{spec.name}.convert.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inference.convert_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(request))
            process.stdin.close()
        except BrokenPipeError:
            pass  # it died at once; its exit status says how, below
        events: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                events.put(line)
            events.put(None)

        threading.Thread(target=pump, daemon=True).start()
        try:
            error = _follow(spec, events, progress, time.monotonic() + limit, limit)
            returncode = process.wait()
        finally:
            # Timed out, or the caller went away (a Streamlit rerun raises from inside
            # `progress`): never leave a converter running behind the lock.
            if process.poll() is None:
                process.kill()
                process.wait()
    if error is not None:
        kind = _ERRORS.get(error.split(":", 1)[0], ConversionError)
        raise kind(error.split(":", 1)[1].strip() if ":" in error else error)
    if returncode != 0:
        raise ConversionError(
            f"{spec.name}: the converter process exited with status {returncode}; see {log_path}"
        )


def _follow(
    spec: ModelSpec,
    events: queue.Queue[str | None],
    progress: Progress | None,
    deadline: float,
    limit: float,
) -> str | None:
    """Relay the converter's JSON-line events until it closes stdout; return its error."""
    error: str | None = None
    while True:
        try:
            line = events.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise ConversionError(
                f"{spec.name}: conversion took longer than {limit:.0f} s and was stopped "
                f"(set {TIMEOUT_ENV} to allow more)"
            ) from None
        if line is None:
            return error
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a library printed to stdout
        if event.get("event") == "error":
            error = event.get("message", "unknown error")
        elif progress and "message" in event:
            progress(event["message"], float(event.get("fraction", 0.0)))


def _spec_to_json(spec: ModelSpec) -> dict[str, Any]:
    data = dataclasses.asdict(spec)
    data["path"] = str(spec.path) if spec.path else None
    data["calibration_dir"] = str(spec.calibration_dir) if spec.calibration_dir else None
    data["labels"] = []  # the converter does not need them
    return data


def spec_from_json(data: dict[str, Any]) -> ModelSpec:
    """Rebuild a spec in the converter process."""
    from inference.specs import Preprocessing

    pre = data["preprocessing"]
    return ModelSpec(
        name=data["name"],
        title=data["title"],
        source=Source(data["source"]),
        preprocessing=Preprocessing(
            size=tuple(pre["size"]),
            normalize=pre["normalize"],
            color_mode=pre["color_mode"],
            crop_fraction=pre["crop_fraction"],
            resample=pre["resample"],
        ),
        labels=(),
        variants=tuple(Variant(v) for v in data["variants"]),
        path=Path(data["path"]) if data["path"] else None,
        weights_file=data["weights_file"],
        calibration_dir=Path(data["calibration_dir"]) if data["calibration_dir"] else None,
        fingerprint=data["fingerprint"],
    )


_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (ModelUnavailableError, InputError, ConversionError)
}
