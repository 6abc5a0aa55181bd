"""The Benchmark page's runs: timed runs per model variant, and accuracy on a labelled set."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from inference import ModelSpec
from inference.analysis.benchmark import BenchResult, run_benchmarks
from inference.analysis.evaluate import Evaluation, evaluate, labelled_set
from ui.resources import Upload, get_runners, show_error
from ui.widgets import variants_of


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
    dataset = labelled_set(
        spec, archive.getvalue() if archive else None, archive.name if archive else ""
    )
    runners = get_runners(spec, variants_of(spec, variant_names))
    bar = st.progress(0.0, text="evaluating")
    return evaluate(spec, runners, dataset, progress=lambda t, f: bar.progress(min(f, 1.0), text=t))
