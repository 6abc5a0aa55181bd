"""Models people bring: check the file in a child process, describe it as a spec, store uploads.

A model file names its layers and tensor sizes; a crafted one can declare
billions of weights and exhaust memory while loading. :func:`inspect_model`
opens it in ``python -m inference.engine.workers.inspect`` with an address-space and
time limit, so such a file costs the server nothing, and refuses models too
large to serve before the server ever loads them.
"""

from __future__ import annotations

import logging
import uuid
import zipfile
from pathlib import Path
from typing import Any

from inference.core.child_process import ChildFailed, run_child
from inference.core.errors import InputError
from inference.core.labels import read_labels
from inference.core.paths import cache_dir
from inference.core.specs import (
    TFLITE_FILE,
    TFLITE_VARIANTS,
    ModelSpec,
    NormalizeMode,
    OutputKind,
    Preprocessing,
    Source,
    Variant,
    Weights,
)
from inference.engine.convert import CUSTOM_PREFIX
from inference.formats.tflite_file import inspect_tflite
from inference.registry.zoo import file_fingerprint

__all__ = [
    "CUSTOM_SUFFIXES",
    "MAX_PARAMETERS",
    "MAX_TENSOR_BYTES",
    "check_keras_archive",
    "custom_spec",
    "inspect_model",
    "recipe_variant_spec",
    "store_upload",
]

log = logging.getLogger("inference")

CUSTOM_SUFFIXES = (".keras", ".h5", ".tflite")
MAX_CUSTOM_INPUT_SIDE = 1024
MEMORY_LIMIT_BYTES = 4 * 1024**3
"""Address space of the checker, a backstop: TensorFlow reserves ~1.6 GB of it to import."""
RESIDENT_LIMIT_BYTES = 950_000_000
"""Resident memory of the checker. TensorFlow and Keras take ~0.6 GB of it; with the
server's own ~0.5 GB the process tree stays under 1.5 GB whatever is uploaded."""
TIMEOUT_S = 180
MAX_PARAMETERS = 50_000_000
"""Largest Keras model served (200 MB of float32 weights; ResNet50 has 25 M)."""
MAX_KERAS_ENTRIES = 64
MAX_KERAS_CONFIG_BYTES = 4_000_000
"""A .keras archive's config.json or metadata.json, inflated."""
MAX_KERAS_INFLATED_BYTES = MAX_PARAMETERS * 4 + 100_000_000
MAX_TENSOR_BYTES = 1_000_000_000
"""Largest total of a .tflite file's tensors (weights and activations)."""


def check_keras_archive(path: Path) -> None:
    """Refuse a ``.keras`` archive that would inflate too far, from its zip directory alone.

    Nothing is decompressed: the sizes are the ones the archive declares, which
    is what a zip bomb's reader would have to allocate.

    Raises:
        InputError: Too many entries, a config or metadata JSON over 4 MB, or
            more than the weights of :data:`MAX_PARAMETERS` in all.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: Keras' own loader refuses it, in the child
    if len(infos) > MAX_KERAS_ENTRIES:
        raise InputError(f"{path.name}: the archive has {len(infos)} entries; refused")
    for info in infos:
        if info.filename.endswith(".json") and info.file_size > MAX_KERAS_CONFIG_BYTES:
            raise InputError(
                f"{path.name}: {info.filename} inflates to {info.file_size / 1e6:,.0f} MB; "
                f"a config or metadata over {MAX_KERAS_CONFIG_BYTES / 1e6:.0f} MB is refused"
            )
    inflated = sum(info.file_size for info in infos)
    if inflated > MAX_KERAS_INFLATED_BYTES:
        raise InputError(
            f"{path.name}: the archive inflates to {inflated / 1e6:,.0f} MB; models over "
            f"{MAX_KERAS_INFLATED_BYTES / 1e6:.0f} MB are refused"
        )


def inspect_model(path: Path) -> dict[str, Any]:
    """Describe a ``.keras``/``.h5``/``.tflite`` file from a child process, within limits.

    Returns:
        ``input_shape`` [h, w, c], ``classes`` and ``outputs`` (probabilities or
        logits); ``parameters`` for Keras files; ``variant`` and ``tensor_bytes``
        for TFLite files.

    Raises:
        InputError: The model is unsafe, unreadable, too large, or not an
            image classifier.
    """
    if path.suffix.lower() == ".keras":
        check_keras_archive(path)
    limits = f"{RESIDENT_LIMIT_BYTES / 1e9:.2g} GB of memory and {TIMEOUT_S} s"
    log_path = cache_dir() / f"check-{uuid.uuid4().hex[:8]}.log"
    try:
        facts = run_child(
            "inference.engine.workers.inspect",
            {"path": str(path)},
            timeout=TIMEOUT_S,
            memory_bytes=MEMORY_LIMIT_BYTES,
            resident_bytes=RESIDENT_LIMIT_BYTES,
            log_path=log_path,
            env={"TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except ChildFailed as failure:
        if failure.reason == "timeout":
            raise InputError(
                f"{path.name}: checking this model took more than {limits}; refused"
            ) from None
        # Killed by the memory limit, or a crash inside a native loader.
        log.warning("model checker failed on %s: %s", path.name, _tail(log_path))
        raise InputError(
            f"{path.name}: the model could not be loaded within {limits}; refused"
        ) from None
    finally:
        log_path.unlink(missing_ok=True)
    if int(facts.get("parameters", 0)) > MAX_PARAMETERS:
        raise InputError(
            f"{path.name}: {int(facts['parameters']) / 1e6:.0f} M parameters; models over "
            f"{MAX_PARAMETERS / 1e6:.0f} M are refused"
        )
    if int(facts.get("tensor_bytes", 0)) > MAX_TENSOR_BYTES:
        raise InputError(
            f"{path.name}: its tensors take {int(facts['tensor_bytes']) / 1e6:.0f} MB; models over "
            f"{MAX_TENSOR_BYTES / 1e6:.0f} MB are refused"
        )
    return facts


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def custom_spec(
    model_path: str | Path,
    labels_path: str | Path | None = None,
    *,
    normalize: NormalizeMode | None = None,
    outputs: OutputKind | None = None,
    title: str | None = None,
) -> ModelSpec:
    """Describe a user's ``.keras``/``.h5``/``.tflite`` model.

    The input size, class count and output kind are read from the model
    itself, in a child process (a Keras file is opened with ``safe_mode=True``;
    a ``.tflite`` through LiteRT, without TensorFlow).

    Args:
        model_path: The model file.
        labels_path: One label per line; its count must equal the model's
            outputs. Without it, the labels in a ``.tflite``'s metadata, else
            ``class 0``, ``class 1``, ...
        normalize: Pixel scaling the model expects (see ``Preprocessing``);
            ``None`` takes it from a ``.tflite``'s metadata, else ``raw`` (0-255,
            for models that rescale inside themselves).
        outputs: ``probabilities`` or ``logits``; ``None`` reads it from the
            graph (a final softmax means probabilities).
        title: Display name (default: the file name).

    Raises:
        InputError: The file is missing, of another type, unsafe or corrupt,
            or the labels do not match the outputs.
    """
    path = Path(model_path)
    if path.suffix.lower() not in CUSTOM_SUFFIXES:
        raise InputError(
            f"{path.name}: expected a model file ending in {', '.join(CUSTOM_SUFFIXES)}; "
            f"received {path.suffix or 'no extension'!r}"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    fingerprint = file_fingerprint(path)
    facts = inspect_model(path)
    height, width, channels = (int(d) for d in facts["input_shape"])
    classes = int(facts["classes"])
    metadata: dict[str, Any] = facts.get("metadata") or {}
    is_tflite = path.suffix.lower() == ".tflite"
    # A float .tflite is quantized like a zoo model; a quantized one runs as itself.
    if not is_tflite:
        variants: tuple[Variant, ...] = (Variant.ORIGINAL, *TFLITE_VARIANTS)
    elif facts["variant"] == Variant.FP32.value:
        variants = TFLITE_VARIANTS
    else:
        variants = (Variant(facts["variant"]),)
    if max(height, width) > MAX_CUSTOM_INPUT_SIDE:
        raise InputError(
            f"{path.name}: input {height}x{width} is larger than the "
            f"{MAX_CUSTOM_INPUT_SIDE}x{MAX_CUSTOM_INPUT_SIDE} this app accepts"
        )
    if channels not in (1, 3):
        raise InputError(
            f"{path.name}: expected a model taking 1 or 3 channel images; its input has {channels}"
        )
    if labels_path is not None:
        labels = read_labels(labels_path)
        if len(labels) != classes:
            raise InputError(
                f"{Path(labels_path).name}: the model has {classes} outputs but the labels "
                f"file has {len(labels)} labels; expected one label per output"
            )
    elif metadata.get("labels") and len(metadata["labels"]) == classes:
        labels = tuple(str(label) for label in metadata["labels"])
    else:
        labels = tuple(f"class {i}" for i in range(classes))
    normalize = normalize or metadata.get("normalize") or "raw"
    return ModelSpec(
        name=f"{CUSTOM_PREFIX}{fingerprint}",
        title=title or path.name,
        source=Source.CUSTOM,
        preprocessing=Preprocessing(
            (height, width),
            normalize=normalize,
            color_mode="L" if channels == 1 else "RGB",
            crop_fraction=1.0,
        ),
        labels=labels,
        builder=TFLITE_FILE if is_tflite else "keras_file",
        weights=Weights(file=path.resolve()),
        outputs=outputs or facts["outputs"],
        variants=variants,
        description=f"Your model {title or path.name}",
        fingerprint=fingerprint,
    )


def recipe_variant_spec(base: ModelSpec, path: Path, recipe_name: str) -> ModelSpec:
    """A spec for a file made from ``base`` by a recipe: same labels and preprocessing.

    It runs as itself (one variant, read from the file), so it can be picked
    like any model on every page.
    """
    facts = inspect_tflite(path)  # our own quantizer's output: safe to open here
    fingerprint = file_fingerprint(path)
    return ModelSpec(
        name=f"{base.name}_{fingerprint[:8]}",
        title=f"{base.title} · {recipe_name}",
        source=Source.CUSTOM,
        preprocessing=base.preprocessing,
        labels=base.labels,
        builder=TFLITE_FILE,
        weights=Weights(file=path),
        outputs=base.outputs,
        variants=(facts.variant,),
        description=f"{base.title} quantized with the recipe {recipe_name}",
        fingerprint=fingerprint,
    )


def store_upload(
    folder: Path,
    file_name: str,
    data: bytes,
    labels: bytes | None = None,
    *,
    normalize: NormalizeMode | None = None,
    outputs: OutputKind | None = None,
) -> ModelSpec:
    """Save an uploaded model (and labels) under generated names in ``folder``, then check it.

    The person's file name is only a title: nothing they typed becomes a path.
    A refused file is deleted again.

    Raises:
        InputError: The file type is wrong, or :func:`custom_spec` refuses it.
    """
    suffix = Path(file_name).suffix.lower()
    if suffix not in CUSTOM_SUFFIXES:
        raise InputError(f"{file_name}: expected a .keras, .h5 or .tflite file")
    model_path = folder / f"upload-{uuid.uuid4().hex[:12]}{suffix}"
    model_path.write_bytes(data)
    labels_path = None
    if labels is not None:
        labels_path = model_path.with_suffix(".labels.txt")
        labels_path.write_bytes(labels)
    try:
        return custom_spec(
            model_path, labels_path, normalize=normalize, outputs=outputs, title=file_name
        )
    except BaseException:
        model_path.unlink(missing_ok=True)
        if labels_path is not None:
            labels_path.unlink(missing_ok=True)
        raise
