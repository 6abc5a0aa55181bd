"""Classify images: decode -> preprocess -> predict -> top-k, each stage timed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from inference.preprocess import ImageSource, decode_image, draft_size, preprocess
from inference.runners import Runner, top_k
from inference.specs import Prediction, Timing

__all__ = ["classify", "classify_decoded"]


def classify(
    runner: Runner, source: ImageSource, *, name: str | None = None, k: int = 5
) -> Prediction:
    """Classify one encoded image (bytes, path or file) with ``runner``.

    Raises:
        InputError: The image cannot be decoded.
    """
    label = name or (Path(source).name if isinstance(source, str | Path) else "image")
    spec = runner.spec.preprocessing
    start = time.perf_counter()
    image = decode_image(source, name=label, color_mode=spec.color_mode, min_size=draft_size(spec))
    decode_ms = (time.perf_counter() - start) * 1e3
    return classify_decoded(runner, image, name=label, k=k, decode_ms=decode_ms)


def classify_decoded(
    runner: Runner, image: Image.Image, *, name: str, k: int = 5, decode_ms: float = 0.0
) -> Prediction:
    """Classify an already decoded image; ``decode_ms`` is reported as the decode stage."""
    start = time.perf_counter()
    batch = preprocess(image, runner.spec.preprocessing)
    preprocess_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    probabilities = runner.predict(batch)[0]
    inference_ms = (time.perf_counter() - start) * 1e3
    return Prediction(
        image=name,
        model=runner.spec.name,
        variant=runner.variant,
        top_k=top_k(probabilities, runner.spec.labels, k),
        timing=Timing(decode_ms, preprocess_ms, inference_ms),
        probabilities=np.asarray(probabilities, dtype=np.float32),
    )
