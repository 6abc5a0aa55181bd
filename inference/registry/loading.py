"""Loading a model variant: conversion where a file is missing, then a runner from the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inference.core.child_process import Progress
from inference.core.specs import AnyVariant, ModelSpec, Variant
from inference.engine.convert import ensure_variants
from inference.engine.runners import KerasRunner, LiteRTRunner, Runner

__all__ = ["load_runner", "load_runners", "tflite_path"]


def tflite_path(
    spec: ModelSpec,
    variant: AnyVariant,
    *,
    progress: Progress | None = None,
    calibration: Sequence[Path] | None = None,
) -> Path:
    """The ``.tflite`` file of ``spec`` as ``variant``: the user's own, or one made and cached."""
    return ensure_variants(spec, [variant], progress=progress, calibration=calibration)[variant]


def load_runner(
    spec: ModelSpec,
    variant: AnyVariant | str,
    *,
    threads: int | None = None,
    progress: Progress | None = None,
    calibration: Sequence[Path] | None = None,
    warmup: bool = True,
) -> Runner:
    """Load ``spec`` as ``variant``, converting and caching the TFLite file if needed.

    Args:
        spec: The model.
        variant: A variant the spec offers.
        threads: LiteRT threads (default: every core this process may use).
        progress: Called with (message, fraction done) during conversion.
        calibration: Images for int8 calibration (default: the model's set).
        warmup: Run once on zeros before returning, so the first real call is
            not the one that traces (Keras) or plans (LiteRT).

    Raises:
        InputError: The variant is not offered, or a file is unusable.
        ModelUnavailableError: The model's weights cannot be obtained.
        ConversionError: Conversion failed.
    """
    variant = spec.variant(variant)
    runner: Runner
    if variant is Variant.ORIGINAL:
        runner = KerasRunner.from_spec(spec)
    else:
        path = tflite_path(spec, variant, progress=progress, calibration=calibration)
        runner = LiteRTRunner(spec, variant, path, threads=threads)
    if warmup:
        runner.predict(np.zeros((1, *spec.preprocessing.input_shape), np.float32))
    return runner


def load_runners(
    spec: ModelSpec,
    variants: Sequence[AnyVariant | str],
    *,
    threads: int | None = None,
    progress: Progress | None = None,
    calibration: Sequence[Path] | None = None,
) -> list[Runner]:
    """Load several variants, converting all missing ones in one converter process."""
    wanted = [spec.variant(v) for v in variants]
    to_convert = [v for v in wanted if v.is_tflite]
    if to_convert:
        ensure_variants(spec, to_convert, progress=progress, calibration=calibration)
    return [
        load_runner(spec, v, threads=threads, progress=progress, calibration=calibration)
        for v in wanted
    ]
