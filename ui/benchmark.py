"""The Benchmark page's runs: timed runs per variant, accuracy and robustness on a labelled set."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import streamlit as st

from inference import ModelSpec
from inference.analysis.benchmark import BenchResult, run_benchmarks
from inference.analysis.evaluate import (
    MAX_UPLOAD_IMAGES,
    MAX_ZIP_BYTES,
    Evaluation,
    LabelledSet,
    evaluate,
    labelled_set,
    scan_zip,
)
from inference.analysis.robustness import Robustness, robustness
from inference.core.paths import cache_dir
from inference.formats.corruptions import Corruption
from ui.resources import Upload, cluster, get_runners, show_error
from ui.widgets import variants_of

T = TypeVar("T")

PAGE_CORRUPTIONS = ["gaussian_noise", "impulse_noise", "defocus_blur", "resize_nearest",
                    "resize_bilinear"]  # fmt: skip
"""The corruptions the page starts with (the others are a click away): a noise, the one
that hurts quantized CNNs most, a blur, and the resize method, nearest against bilinear."""


def measure(
    specs: Sequence[ModelSpec], variant_names: Sequence[str], *, runs: int, threads: int
) -> list[BenchResult]:
    """Benchmark each model's chosen variants with a progress bar.

    A job that fails is shown as one line and skipped. The runners are built for
    the run and closed after it.
    """
    jobs = [(spec, v) for spec in specs for v in variants_of(spec, variant_names)]
    bar = st.progress(0.0, text="starting")
    measured = run_benchmarks(
        jobs,
        runs=runs,
        threads=threads,
        on_job=lambda spec, variant, done: bar.progress(
            done, text=f"{spec.title} · {variant.value}"
        ),
        on_error=lambda spec, variant, exc: show_error(exc, f"{spec.title} · {variant.value}"),
        convert_progress=lambda text, done: bar.progress(done, text=f"converting: {text}"),
    )
    for _, runner in measured:
        runner.close()
    bar.progress(1.0, text="done")
    return [result for result, _ in measured]


def evaluate_on(
    spec: ModelSpec, archive: Upload | None, variant_names: Sequence[str]
) -> Evaluation:
    """Score ``spec``'s chosen variants on ``archive``, or on the sample the model ships with.

    Raises:
        InputError: The archive is unusable, or no image in it could be decoded.
    """
    return _run_on(spec, archive, variant_names, "evaluating", evaluate)


def robustness_on(
    spec: ModelSpec,
    archive: Upload | None,
    variant_names: Sequence[str],
    conditions: Sequence[Corruption],
) -> Robustness:
    """Accuracy of ``spec``'s chosen variants under each condition, on ``archive`` or the sample.

    Raises:
        InputError: The archive is unusable, or no image in it could be decoded.
    """
    return _run_on(spec, archive, variant_names, "corrupting and evaluating",
                   functools.partial(robustness, conditions=conditions))  # fmt: skip


def _run_on(
    spec: ModelSpec,
    archive: Upload | None,
    variant_names: Sequence[str],
    start: str,
    run: Callable[..., T],
) -> T:
    """``run(spec, runners, dataset, engine=, progress=)`` on the configured engine, with a bar.

    The bar goes when the run is done: the results say where and how fast it ran.
    """
    engine = cluster()
    dataset = _labelled(spec, archive, engine is not None)
    runners = get_runners(spec, variants_of(spec, variant_names))
    bar = st.progress(0.0, text=engine.description if engine else start)
    result = run(spec, runners, dataset, engine=engine,
                 progress=lambda t, f: bar.progress(min(f, 1.0), text=t))  # fmt: skip
    bar.empty()
    return result


def _labelled(spec: ModelSpec, archive: Upload | None, on_cluster: bool) -> LabelledSet:
    """The uploaded zip (saved to a file for a cluster's nodes), or the model's own sample."""
    data = archive.getvalue() if archive else None
    if on_cluster and data is not None:
        # The cluster's nodes read the set from a file (as they would from shared storage).
        return scan_zip(saved_upload(data), spec.labels, name=archive.name,
                        max_images=MAX_UPLOAD_IMAGES, max_bytes=MAX_ZIP_BYTES)  # fmt: skip
    return labelled_set(spec, data, archive.name if archive else "")


def run_key(
    spec: ModelSpec | None, archive: Upload | None, variant_names: Sequence[str]
) -> tuple[object, ...]:
    """What a labelled-set run is run on: the model, the uploaded zip and the variants."""
    upload = None if archive is None else getattr(archive, "file_id", archive.name)
    return (spec.name if spec else None, upload, tuple(variant_names))


def current(saved: tuple[tuple[object, ...], T] | None, key: tuple[object, ...]) -> T | None:
    """A saved ``(key, result)``'s result when it was run on ``key``, else None."""
    if saved is None or saved[0] != key:
        return None
    return saved[1]


def saved_upload(data: bytes) -> Path:
    """An uploaded zip written once, by content, where the cluster's nodes can read it."""
    folder = cache_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}.zip"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        partial.replace(path)
    return path


def run_line(report: Evaluation) -> str:
    """Where and how fast the evaluation ran, and each node's share of the images."""
    shares = ", ".join(f"{stage} {share:.0%}" for stage, share in report.stage_shares().items())
    line = (
        f"{report.engine[:1].upper()}{report.engine[1:]}: {report.images} images in "
        f"{report.seconds:.1f} s ({report.images_per_second:.0f} images/s; work: {shares})"
    )
    if len(report.nodes) > 1:
        total = sum(report.nodes.values())
        parts = [f"{node[:8]} {count / total:.0%}" for node, count in report.nodes.items()]
        line += f". Images per node: {', '.join(parts)}"
    return line
