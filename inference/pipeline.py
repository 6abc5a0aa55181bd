"""The one pipeline every front end calls: resolve a model's variants, then classify images.

:class:`Pipeline` (with :class:`PipelineOptions`) resolves a model and its
variants for a caller, loads their runners and runs decode -> preprocess ->
predict -> top-k, each stage timed; :func:`classify` and
:func:`classify_decoded` are those stages for one runner.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from inference.core.child_process import Progress
from inference.core.errors import InferenceError
from inference.core.specs import AnyVariant, ModelSpec, Prediction, Timing
from inference.engine.convert import ensure_variants, is_converted
from inference.engine.runners import Runner, top_k
from inference.formats.images import ImageSource, decode_image, draft_size, preprocess
from inference.registry.catalog import Session, resolve
from inference.registry.loading import load_runner, load_runners
from inference.registry.runner_cache import RUNNERS

__all__ = ["NotConvertedError", "Pipeline", "PipelineOptions", "classify", "classify_decoded"]


def classify(
    runner: Runner, source: ImageSource, *, name: str | None = None, k: int = 5
) -> Prediction:
    """Classify one encoded image (bytes, path or file) with ``runner``.

    Raises:
        InputError: The image cannot be decoded.
    """
    label, image, decode_ms = _decode(source, runner.spec, name)
    return classify_decoded(runner, image, name=label, k=k, decode_ms=decode_ms)


def _decode(
    source: ImageSource, spec: ModelSpec, name: str | None
) -> tuple[str, Image.Image, float]:
    """The image's label, the decoded picture at the model's draft size, and milliseconds taken."""
    label = name or (Path(source).name if isinstance(source, str | Path) else "image")
    pre = spec.preprocessing
    start = time.perf_counter()
    image = decode_image(source, name=label, color_mode=pre.color_mode, min_size=draft_size(pre))
    return label, image, (time.perf_counter() - start) * 1e3


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


class NotConvertedError(InferenceError):
    """A variant's file is not made yet, and this pipeline may not make it (the API)."""


@dataclass(frozen=True)
class PipelineOptions:
    """How a :class:`Pipeline` loads and runs its variants, in one object."""

    top_k: int = 5
    """Classes kept per answer (capped at the number of labels)."""
    threads: int | None = None
    """LiteRT threads per runner; ``None``: one per core this process may use."""
    shared: bool = False
    """Take runners from the process's :data:`RUNNERS` cache (pages, API) instead of loading
    private ones (CLI, scripts). Shared runners use the default threads."""
    convert: bool = True
    """Make missing variant files; ``False`` raises :class:`NotConvertedError` instead (the API
    never starts a conversion for an anonymous request)."""
    original: bool = True
    """Whether the Keras original may be loaded (it imports TensorFlow into the process)."""
    calibration: tuple[Path, ...] | None = None
    """Images that calibrate recipes which need it (``None``: the model's own set)."""
    progress: Progress | None = None
    """Called with (message, fraction done) while files are converted."""


class Pipeline:
    """One model and its chosen variants: resolved once, then decode -> preprocess -> each variant.

    Every front end builds one: the CLI's ``predict``, the API's ``/api/predict`` and
    the pages, so which variants exist (zoo, saved, session) and who may load the
    original is decided in one place (:func:`inference.registry.catalog.resolve`).

        >>> pipe = Pipeline("efficientnet_lite0", "fp32,int8")
        >>> [p.top_k[0].label for p in pipe("cat.jpg")]
        ['tabby', 'tabby']
    """

    def __init__(
        self,
        model: str | ModelSpec,
        variants: str | Sequence[AnyVariant] = "int8",
        *,
        session: Session | None = None,
        options: PipelineOptions | None = None,
    ) -> None:
        """Resolve the model and variants; nothing is loaded yet.

        Raises:
            InputError: Unknown model. UsageError: unknown variant.
            NotAllowedError: The original, where ``options.original`` is false.
        """
        self.options = options or PipelineOptions()
        text = variants if isinstance(variants, str) else ",".join(v.value for v in variants)
        self.spec, self.variants = resolve(
            model, text, session=session, original=self.options.original
        )
        self._runners: dict[AnyVariant, Runner] = {}

    @property
    def missing(self) -> list[AnyVariant]:
        """Variants whose ``.tflite`` file is not made yet."""
        return [v for v in self.variants if v.is_tflite and not is_converted(self.spec, v)]

    def runners(self) -> dict[AnyVariant, Runner]:
        """Every variant's runner, converting missing files first when allowed.

        Raises:
            NotConvertedError: Files are missing and ``options.convert`` is false.
            ConversionError, ModelUnavailableError: As :func:`load_runners`.
        """
        if len(self._runners) == len(self.variants):
            return self._runners
        options, missing = self.options, self.missing
        if missing and not options.convert:
            names = ", ".join(v.value for v in missing)
            raise NotConvertedError(
                f"{self.spec.name} {names} is not converted yet; convert it on the Models page "
                f"or with: python -m inference convert --model {self.spec.name}"
            )
        if options.shared:
            if missing:
                ensure_variants(
                    self.spec, missing, progress=options.progress, calibration=options.calibration
                )
            self._runners = {v: self.runner(v) for v in self.variants}
        else:
            loaded = load_runners(
                self.spec,
                self.variants,
                threads=options.threads,
                progress=options.progress,
                calibration=options.calibration,
            )
            self._runners = dict(zip(self.variants, loaded, strict=True))
        return self._runners

    def runner(self, variant: AnyVariant) -> Runner:
        """One variant's runner, its file converted first if allowed.

        For callers that load variant by variant and report each failure on its own
        (the pages).

        Raises:
            NotConvertedError, ConversionError, ModelUnavailableError: As :meth:`runners`.
        """
        if variant not in self._runners:
            if variant in self.missing and not self.options.convert:
                raise NotConvertedError(f"{self.spec.name} {variant.value} is not converted yet")
            if self.options.shared:
                self._runners[variant] = RUNNERS.get(self.spec, variant)
            else:
                self._runners[variant] = load_runner(
                    self.spec,
                    variant,
                    threads=self.options.threads,
                    progress=self.options.progress,
                    calibration=self.options.calibration,
                )
        return self._runners[variant]

    def decode(self, source: ImageSource, *, name: str | None = None) -> Image.Image:
        """The image upright, in the model's colour mode, at its draft size (JPEG).

        Raises:
            InputError: The image cannot be decoded.
        """
        return _decode(source, self.spec, name)[1]

    def __call__(self, source: ImageSource, *, name: str | None = None) -> list[Prediction]:
        """Every variant's answer for one encoded image, decoded and preprocessed once.

        Raises:
            InputError: The image cannot be decoded.
        """
        runners = self.runners()
        label, image, decode_ms = _decode(source, self.spec, name)
        return [
            classify_decoded(
                runners[v], image, name=label, k=self.options.top_k, decode_ms=decode_ms
            )
            for v in self.variants
        ]

    def close(self) -> None:
        """Release private runners (shared ones belong to the cache)."""
        if not self.options.shared:
            for runner in self._runners.values():
                runner.close()
        self._runners = {}

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
