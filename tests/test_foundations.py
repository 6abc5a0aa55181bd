"""The ground the app stands on: spec JSON, error policy, CLI bug reports, child protocol, cache.

All fast: nothing here converts or trains.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inference import ZOO, InputError, ModelSpec, UsageError, Variant, parse_variants
from inference.core.child_process import ChildFailed, run_child
from inference.core.errors import one_line
from inference.registry.runner_cache import RunnerCache
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_spec_survives_its_json_round_trip(name: str) -> None:
    spec = ZOO[name]

    again = ModelSpec.from_json(json.loads(json.dumps(spec.to_json())))

    assert again == spec


def test_specs_declare_their_builder_and_output_kind() -> None:
    for spec in ZOO.values():
        assert spec.builder in {"efficientnet_lite", "keras_application", "fashion_mnist_cnn"}
        assert spec.outputs == "probabilities"
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


def _cli_with_a_bug(*args: str, bug: str) -> subprocess.CompletedProcess[str]:
    script = (
        "import sys, inference.cli as cli\n"
        f"cli.COMMANDS['models'] = lambda args: {bug}\n"
        f"sys.exit(cli.main({list(args)!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT
    )


def test_cli_reports_a_bug_in_one_line_and_its_traceback_with_verbose() -> None:
    quiet = _cli_with_a_bug("models", bug="1 / 0")
    verbose = _cli_with_a_bug("models", "--verbose", bug="1 / 0")

    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == [
        "error: unexpected ZeroDivisionError: division by zero "
        "(run with --verbose for the traceback)"
    ]
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert "ZeroDivisionError" in verbose.stderr.strip().splitlines()[-1]


def test_a_value_error_from_a_bug_is_not_a_usage_error() -> None:
    result = _cli_with_a_bug("models", bug="int('seven')")

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


def test_runner_cache_loads_each_variant_once_and_drops_the_least_recent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[tuple[str, Variant]] = []

    def slow_load(spec: ModelSpec, variant: Variant) -> _FakeRunner:
        loads.append((spec.name, variant))
        time.sleep(0.05)  # long enough for all threads to arrive while it loads
        return _FakeRunner(f"{spec.name}-{variant}")

    monkeypatch.setattr("inference.registry.runner_cache.load_runner", slow_load)
    cache = RunnerCache(capacity=2)
    lite0, lite1 = ZOO["efficientnet_lite0"], ZOO["efficientnet_lite1"]
    barrier = threading.Barrier(8)
    got: list[object] = []

    def session() -> None:
        barrier.wait()
        got.append(cache.get(lite0, "int8"))

    threads = [threading.Thread(target=session) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loads == [("efficientnet_lite0", Variant.INT8)]
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


def test_model_key_separates_labels_for_the_same_weights() -> None:
    from inference.registry.runner_cache import model_key

    spec = ZOO["fashion_mnist_cnn"]
    relabelled = spec.with_labels(tuple(label.upper() for label in spec.labels))

    assert model_key(spec) != model_key(relabelled)
    assert np.array_equal(np.array(spec.preprocessing.size), [28, 28])


def test_background_conversions_are_shared_and_failures_not_retried_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inference.core.errors import ConversionError
    from inference.registry import background_conversions as background

    calls: list[tuple[str, ...]] = []
    release = threading.Event()

    def fake_ensure(spec: ModelSpec, variants: tuple, progress) -> None:
        calls.append(tuple(str(v) for v in variants))
        progress("quantizing int8", 0.5)
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
    time.sleep(0.1)
    assert first.message == "quantizing int8" and first.fraction == 0.5
    release.set()
    assert first.done.wait(5) and failing.done.wait(5)

    assert first.error is None and isinstance(failing.error, ConversionError)
    assert registry.start(fashion, [Variant.INT8]) is failing  # reported, not retried
    assert calls == [("fp32", "int8"), ("int8",)]
