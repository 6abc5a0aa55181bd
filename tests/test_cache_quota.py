"""The conversion cache's quota: least recently used variants of uploads and custom recipes go."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from inference import ZOO, Variant
from inference.engine.convert import (
    QUOTA_ENV,
    cache_usage,
    enforce_quota,
    ensure_recipe,
    ensure_variants,
    float_path,
)
from inference.formats.recipes import builtin_recipe
from inference.formats.tflite_file import is_valid
from tests.conftest import RunnerPool

FASHION = ZOO["fashion_mnist_cnn"]


def _age(path: Path, seconds: float) -> None:
    """Last used ``seconds`` ago (access time; the modification time is left alone)."""
    os.utime(path, ns=(int((time.time() - seconds) * 1e9), path.stat().st_mtime_ns))


@pytest.fixture
def cache(runners: RunnerPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache of its own holding only Fashion's fp32 file (copied, not converted)."""
    made = runners.path("fashion_mnist_cnn", Variant.FP32)
    monkeypatch.setenv("QUANTLENS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(QUOTA_ENV, raising=False)
    shutil.copy(made, float_path(FASHION))
    shutil.copy(made.with_suffix(".json"), float_path(FASHION).with_suffix(".json"))
    return tmp_path


def test_least_recently_used_custom_variants_are_evicted_first(cache: Path) -> None:
    built_in = ensure_variants(FASHION, [Variant.DYNAMIC, Variant.W4])
    w4 = builtin_recipe(Variant.W4)
    a, b, c = (
        ensure_recipe(FASHION, w4.keeping_float(operations=(op,)))
        for op in ("FULLY_CONNECTED", "CONV_2D", "SOFTMAX")
    )
    for path, seconds in ((a, 1000), (b, 2000), (c, 500), *((p, 5000) for p in built_in.values())):
        _age(path, seconds)
    _age(float_path(FASHION), 5000)
    total, evictable = cache_usage()
    assert evictable == 3

    assert enforce_quota(total - 1) == [b]  # the least recently used custom recipe
    assert enforce_quota(1) == [a, c]  # then the next; the built-in ones never go
    assert all(is_valid(p) for p in [float_path(FASHION), *built_in.values()])
    assert not b.exists() and not b.with_suffix(".json").exists()

    again = ensure_recipe(FASHION, w4.keeping_float(operations=("CONV_2D",)))
    assert again == b and is_valid(again)  # rebuilt from its recipe when asked for


def test_a_quota_in_the_environment_is_kept_after_each_build(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w4 = builtin_recipe(Variant.W4)
    old = ensure_recipe(FASHION, w4.keeping_float(operations=("FULLY_CONNECTED",)))
    _age(old, 3600)
    total, _ = cache_usage()
    monkeypatch.setenv(QUOTA_ENV, str(total / 1e6))  # full already: the next build overflows

    new = ensure_recipe(FASHION, w4.keeping_float(operations=("CONV_2D",)))

    assert is_valid(new) and not old.exists()  # the new file is just used: it stays
    assert cache_usage()[0] <= total


def test_a_ready_file_is_served_while_another_conversion_holds_the_model(cache: Path) -> None:
    import threading

    from inference.engine.convert import _model_lock

    made = ensure_variants(FASHION, [Variant.DYNAMIC])
    held, finished = threading.Event(), threading.Event()

    def convert_something_else() -> None:  # stands in for a background conversion
        with _model_lock(FASHION):
            held.set()
            finished.wait(60)

    worker = threading.Thread(target=convert_something_else)
    worker.start()
    try:
        assert held.wait(10)
        got: list[object] = []
        asker = threading.Thread(
            target=lambda: got.append(ensure_variants(FASHION, [Variant.DYNAMIC]))
        )
        asker.start()
        asker.join(30)
        assert got == [made]  # answered without waiting for the lock
    finally:
        finished.set()
        worker.join()
