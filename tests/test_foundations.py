"""The ground the app stands on: spec JSON, error policy, CLI bug reports, child protocol, cache.

All fast: nothing here converts or trains.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from inference import ZOO, InputError, ModelSpec, UsageError, Variant, parse_variants
from inference.core.child_process import ChildFailed, run_child
from inference.core.errors import one_line
from inference.models.builders import BUILDERS
from inference.registry.runner_cache import RunnerCache, model_key


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_spec_survives_its_json_round_trip(name: str) -> None:
    spec = ZOO[name]

    again = ModelSpec.from_json(json.loads(json.dumps(spec.to_json())))

    assert again == spec


def test_every_zoo_spec_has_a_builder_and_exactly_one_weights_location() -> None:
    # Whether each spec's output kind is right is checked on the model the builder makes
    # (tests/test_zoo.py, tests/test_models.py, tests/test_fashion_mnist.py).
    for spec in ZOO.values():
        assert spec.builder in BUILDERS, spec.name
        located = [spec.weights.package, spec.weights.file, spec.weights.download]
        assert sum(x is not None for x in located) == 1, spec.name


def test_a_bad_variant_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="expected variant to be one of"):
        parse_variants("int9")


def test_error_policy_shows_our_message_and_logs_a_bug(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.policy")

    assert one_line(InputError("cat.jpg: not an image"), context="x", log=log) == (
        "cat.jpg: not an image"
    )
    assert not caplog.records

    try:
        {}["missing"]
    except KeyError as exc:
        with caplog.at_level(logging.ERROR, logger="test.policy"):
            line = one_line(exc, context="lite0 int8 on cat.jpg", log=log)
    assert line == "lite0 int8 on cat.jpg: failed unexpectedly (KeyError); the error was logged."
    assert caplog.records[0].exc_info is not None  # the traceback went to the log


class _CliRun(NamedTuple):
    returncode: int
    stderr: str


@pytest.fixture
def cli_with_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., _CliRun]:
    """``cli.main(args)`` (what ``python -m inference`` exits with) whose ``models`` has a bug."""
    from inference import cli

    def run(*args: str, bug: Callable[[object], object]) -> _CliRun:
        monkeypatch.setitem(cli.COMMANDS, "models", bug)
        capsys.readouterr()
        status = cli.main(list(args))
        return _CliRun(status, capsys.readouterr().err)

    return run


def test_cli_reports_a_bug_in_one_line_and_its_traceback_with_verbose(
    cli_with_a_bug: Callable[..., _CliRun],
) -> None:
    quiet = cli_with_a_bug("models", bug=lambda args: 1 / 0)
    verbose = cli_with_a_bug("models", "--verbose", bug=lambda args: 1 / 0)

    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == [
        "error: unexpected ZeroDivisionError: division by zero "
        "(run with --verbose for the traceback)"
    ]
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert "ZeroDivisionError" in verbose.stderr.strip().splitlines()[-1]


def test_a_value_error_from_a_bug_is_not_a_usage_error(
    cli_with_a_bug: Callable[..., _CliRun],
) -> None:
    result = cli_with_a_bug("models", bug=lambda args: int("seven"))

    assert result.returncode == 1  # usage errors exit with 2
    assert "unexpected ValueError" in result.stderr


def test_child_protocol_relays_progress_results_and_our_errors(tmp_path: Path) -> None:
    worker = tmp_path / "probe_worker.py"
    worker.write_text(
        "import sys\n"
        "from inference.core.child_process import emit, serve\n"
        "from inference.core.errors import InputError\n"
        "def handle(request):\n"
        "    emit(event='progress', message='half', fraction=0.5)\n"
        "    print('a library printing to stdout')\n"
        "    if request['fail']:\n"
        "        raise InputError('bad.keras: refused')\n"
        "    return {'answer': request['x'] * 2}\n"
        "sys.exit(serve(handle))\n"
    )
    seen: list[tuple[str, float]] = []
    env = {"PYTHONPATH": str(tmp_path)}

    result = run_child(
        "probe_worker",
        {"x": 21, "fail": False},
        timeout=60,
        log_path=tmp_path / "log",
        progress=lambda m, f: seen.append((m, f)),
        env=env,
    )

    assert result == {"answer": 42}
    assert seen == [("half", 0.5)]
    with pytest.raises(InputError, match=r"^bad\.keras: refused$"):
        run_child(
            "probe_worker", {"x": 1, "fail": True}, timeout=60, log_path=tmp_path / "log", env=env
        )
    with pytest.raises(ChildFailed) as failed:
        run_child("probe_worker", {}, timeout=60, log_path=tmp_path / "log", env=env)
    assert failed.value.reason == "unexpected" and "KeyError" in failed.value.detail


class _FakeRunner:
    def __init__(self, name: str) -> None:
        self.name = name


class _CountingLock:
    """A lock that counts the threads that asked for it, and says when ``expected`` have."""

    def __init__(self, expected: int) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._guard = threading.Lock()
        self.all_arrived = threading.Event()
        self.expected = expected

    def __enter__(self) -> None:
        with self._guard:
            self._count += 1
            if self._count == self.expected:
                self.all_arrived.set()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_runner_cache_loads_each_variant_once_and_drops_the_least_recent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sessions = 8
    loads: list[tuple[str, Variant]] = []
    cache = RunnerCache(capacity=2)
    lite0, lite1 = ZOO["efficientnet_lite0"], ZOO["efficientnet_lite1"]
    # The cache's per-variant loading lock, watched: the load goes on only once every
    # session waits for it, so all eight ask while the first one is loading.
    loading = _CountingLock(sessions)
    cache._loading[(model_key(lite0), Variant.INT8)] = loading  # setdefault keeps it

    def load_while_all_wait(spec: ModelSpec, variant: Variant) -> _FakeRunner:
        loads.append((spec.name, variant))
        if variant is Variant.INT8:
            assert loading.all_arrived.wait(10), "the other sessions never asked"
        return _FakeRunner(f"{spec.name}-{variant}")

    monkeypatch.setattr("inference.registry.runner_cache.load_runner", load_while_all_wait)
    got: list[object] = []

    def session() -> None:
        got.append(cache.get(lite0, "int8"))

    threads = [threading.Thread(target=session) for _ in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loading.all_arrived.is_set()
    assert loads == [("efficientnet_lite0", Variant.INT8)]
    assert len(got) == sessions
    assert len({id(runner) for runner in got}) == 1
    cache.get(lite0, "fp32")
    cache.get(lite0, "int8")  # now the most recent
    cache.get(lite1, "int8")  # evicts lite0 fp32, the least recent
    assert (lite0, Variant.FP32) not in cache
    assert (lite0, Variant.INT8) in cache and (lite1, Variant.INT8) in cache
    assert len(cache) == 2


def test_runners_are_released_least_recent_first_past_the_memory_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Sized:
        def __init__(self, spec: ModelSpec) -> None:
            self.spec = spec

    monkeypatch.setattr(
        "inference.registry.runner_cache.load_runner", lambda spec, variant: Sized(spec)
    )
    mb = 1_000_000
    # Each loaded runner holds 100 MB of a 500 MB base; the threshold is 750 MB.
    cache = RunnerCache(
        capacity=8, threshold=lambda: 750 * mb, resident=lambda: 500 * mb + 100 * mb * len(cache)
    )
    lite0, fashion = ZOO["efficientnet_lite0"], ZOO["fashion_mnist_cnn"]
    for variant in ("fp32", "fp16", "int8"):
        cache.get(lite0, variant)
    cache.get(lite0, "fp32")  # now the most recent; fp16 is the least
    assert cache.releases == []  # 800 MB is past 750 only after this third load

    cache.get(fashion, "int8")  # 800 MB before loading: fp16 goes first

    assert (lite0, Variant.FP16) not in cache
    assert (lite0, Variant.FP32) in cache and (lite0, Variant.INT8) in cache
    assert (fashion, Variant.INT8) in cache
    (release,) = cache.releases
    assert release.released == ("EfficientNet-Lite0 fp16",)
    assert (release.resident_before, release.resident_after) == (800 * mb, 700 * mb)


def test_the_memory_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.registry.runner_cache import memory_cap

    monkeypatch.delenv("QUANTLENS_MEMORY_CAP_MB", raising=False)
    monkeypatch.delenv("QUANTLENS_MEMORY_SHARE", raising=False)
    assert memory_cap() == (2_700_000_000, 0.8)  # Community Cloud's cap, 80 %
    monkeypatch.setenv("QUANTLENS_MEMORY_CAP_MB", "1500")
    monkeypatch.setenv("QUANTLENS_MEMORY_SHARE", "0.5")
    assert memory_cap() == (1_500_000_000, 0.5)


def test_model_key_separates_labels_and_output_kind_for_the_same_weights() -> None:
    spec = ZOO["fashion_mnist_cnn"]
    relabelled = spec.with_labels(tuple(label.upper() for label in spec.labels))
    as_logits = dataclasses.replace(spec, outputs="logits")
    again = ModelSpec.from_json(json.loads(json.dumps(spec.to_json())))

    assert model_key(again) == model_key(spec)
    assert model_key(spec) != model_key(relabelled)
    assert model_key(spec) != model_key(as_logits)


def test_background_conversions_are_shared_and_failures_not_retried_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inference.core.errors import ConversionError
    from inference.registry import background_conversions as background

    calls: list[tuple[str, ...]] = []
    reported, release = threading.Event(), threading.Event()

    def fake_ensure(spec: ModelSpec, variants: tuple, progress) -> None:
        calls.append(tuple(str(v) for v in variants))
        progress("quantizing int8", 0.5)
        if spec.name == "efficientnet_lite0":
            reported.set()
        release.wait(5)
        if spec.name == "fashion_mnist_cnn":
            raise ConversionError("the converter crashed")

    monkeypatch.setattr(background, "ensure_variants", fake_ensure)
    registry = background.Conversions()
    lite0, fashion = ZOO["efficientnet_lite0"], ZOO["fashion_mnist_cnn"]

    first = registry.start(lite0, [Variant.ORIGINAL, Variant.FP32, Variant.INT8], nice=10)
    assert registry.start(lite0, [Variant.INT8]) is first  # joins the running conversion
    assert first.variants == (Variant.FP32, Variant.INT8)  # the Keras original needs none
    failing = registry.start(fashion, [Variant.INT8])
    assert reported.wait(5)  # the job has reported its progress, and waits for release
    assert first.message == "quantizing int8" and first.fraction == 0.5
    assert not first.done.is_set() and registry.running(lite0) == [first]
    release.set()
    assert first.done.wait(5) and failing.done.wait(5)

    assert first.error is None and isinstance(failing.error, ConversionError)
    assert registry.start(fashion, [Variant.INT8]) is failing  # reported, not retried
    assert calls == [("fp32", "int8"), ("int8",)]
