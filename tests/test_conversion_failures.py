"""A failed background conversion is remembered until the person asks to try again.

A conversion that fails (a timeout fails after its whole time limit) must not
be started again on the next rerun of the page that asked for it: the page
shows the one-line reason and a "Try again" button, and only that button
starts it again. Nothing here converts: ``ensure_variants`` is a fake.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from inference import ConversionError, Variant, get_spec
from inference.core.paths import CACHE_ENV
from inference.core.specs import ModelSpec
from inference.registry import background_conversions as background
from tests.conftest import REPO_ROOT

ENTRYPOINT = str(REPO_ROOT / "streamlit_app.py")
TIMEOUT_MESSAGE = "efficientnet_lite0: conversion took more than 600 s and was stopped; see the log"


class _Clock:
    """``time.monotonic`` for the background conversions only, moved on by the tests."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(background, "time", SimpleNamespace(monotonic=clock))
    return clock


def _failing_late(clock: _Clock, calls: list[tuple[Any, ...]]) -> Callable[..., None]:
    """A conversion that times out: it fails ten minutes after it started."""

    def ensure_variants(spec: ModelSpec, variants: Sequence[Variant], progress: Any = None) -> None:
        calls.append(tuple(variants))
        clock.offset += 600
        raise ConversionError(TIMEOUT_MESSAGE)

    return ensure_variants


def test_a_conversion_that_failed_late_is_not_started_again(
    clock: _Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(background, "ensure_variants", _failing_late(clock, calls))
    conversions = background.Conversions()
    spec = get_spec("efficientnet_lite0")

    job = conversions.start(spec, [Variant.INT8, Variant.FP16])
    assert job.done.wait(10)
    clock.offset += 3600  # an hour of reruns later

    again = conversions.start(spec, [Variant.INT8])  # the same variants, or some of them

    assert again is job, "the failed conversion was started again"
    assert calls == [(Variant.INT8, Variant.FP16)]
    assert isinstance(job.error, ConversionError) and str(job.error) == TIMEOUT_MESSAGE
    assert job.finished is not None and job.finished - job.started >= 600

    retried = conversions.retry(spec, [Variant.INT8])  # the person pressed "Try again"

    assert retried is not job
    assert retried.done.wait(10)
    assert calls == [(Variant.INT8, Variant.FP16), (Variant.INT8,)]
    assert conversions.start(spec, [Variant.INT8]) is retried


def test_remembered_failures_are_bounded(clock: _Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(background, "ensure_variants", _failing_late(clock, calls))
    monkeypatch.setattr(background, "MAX_FAILURES", 2)
    conversions = background.Conversions()
    spec = get_spec("efficientnet_lite0")

    jobs = []
    for variant in (Variant.INT8, Variant.FP16, Variant.DYNAMIC):
        jobs.append(conversions.start(spec, [variant]))
        assert jobs[-1].done.wait(10)

    assert conversions.start(spec, [Variant.DYNAMIC]) is jobs[2]
    assert conversions.start(spec, [Variant.FP16]) is jobs[1]
    assert len(calls) == 3
    oldest = conversions.start(spec, [Variant.INT8])  # forgotten: the oldest failure
    assert oldest is not jobs[0] and oldest.done.wait(10) and len(calls) == 4


def test_classify_shows_a_failed_conversion_and_tries_again_on_request(
    clock: _Clock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # nothing converted yet
    conversions = background.Conversions()
    monkeypatch.setattr(background, "CONVERSIONS", conversions)
    calls: list[tuple[Any, ...]] = []
    fail = threading.Event()
    hold = threading.Event()

    def ensure_variants(spec: ModelSpec, variants: Sequence[Variant], progress: Any = None) -> None:
        calls.append(tuple(variants))
        if len(calls) == 1:
            fail.wait(30)
            clock.offset += 600  # it failed when its time limit ran out
            raise ConversionError(TIMEOUT_MESSAGE)
        hold.wait(30)  # the second attempt is still converting while the page is checked

    monkeypatch.setattr(background, "ensure_variants", ensure_variants)

    def progress_texts(at: AppTest) -> list[str]:
        return [p.proto.text for p in at.get("progress")]

    try:
        at = AppTest.from_file(ENTRYPOINT, default_timeout=120)
        at.run()
        at.selectbox(key="classify_model").set_value("efficientnet_lite0").run()
        at.multiselect(key="classify_variants").set_value(["int8"]).run()
        at.multiselect(key="classify_samples").set_value(["coffee.jpg"]).run()
        assert not at.exception and not at.error
        assert any("Converting EfficientNet-Lite0 to int8" in t for t in progress_texts(at))

        (job,) = conversions.running(get_spec("efficientnet_lite0"))
        fail.set()
        assert job.done.wait(10)
        for _ in range(2):  # the fragment's poll reruns the page, and later reruns follow
            at.run()
            assert not at.exception
            assert [e.value for e in at.error] == [TIMEOUT_MESSAGE]
            assert at.button(key="classify_retry").label == "Try again"
            assert not progress_texts(at)
            assert len(calls) == 1, "the failed conversion was started again without asking"

        at.button(key="classify_retry").click().run()

        assert not at.exception and not at.error
        assert len(calls) == 2
        assert any("Converting EfficientNet-Lite0 to int8" in t for t in progress_texts(at))
        assert not any(b.key == "classify_retry" for b in at.button)
    finally:
        fail.set()
        hold.set()
