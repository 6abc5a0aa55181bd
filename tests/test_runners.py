"""Runner plumbing: quantized I/O, probabilities, top-k, cache files, no TensorFlow on TFLite."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from inference import LiteRTRunner, Variant, get_spec, top_k
from inference.engine.convert import ensure_variants, float_path, variant_path
from inference.engine.runners import to_probabilities
from inference.formats.tflite_file import inspect_tflite
from tests.conftest import REPO_ROOT, RunnerPool


def test_quantize_input_uses_the_tensor_scale_and_zero_point(runners: RunnerPool) -> None:
    runner = runners.get("efficientnet_lite0", Variant.INT8)
    assert isinstance(runner, LiteRTRunner)
    scale, zero_point = runner.input_quantization
    batch = np.array([-1.5, -0.99, 0.0, 0.5, 1.0, 3.0], np.float32).reshape(1, 1, 2, 3)

    quantized = runner.quantize_input(batch)

    assert quantized.dtype == runner.input_dtype == np.int8
    expected = np.clip(np.rint(batch / scale) + zero_point, -128, 127)
    np.testing.assert_array_equal(quantized, expected.astype(np.int8))
    assert quantized.min() == -128 and quantized.max() == 127  # saturates, never wraps


def test_dequantize_output_inverts_the_output_quantization(runners: RunnerPool) -> None:
    runner = runners.get("efficientnet_lite0", Variant.INT8)
    scale, zero_point = runner.output_quantization
    raw = np.array([[-128, -127, 0, 127]], np.int8)

    np.testing.assert_allclose(
        runner.dequantize_output(raw), (raw.astype(float) - zero_point) * scale
    )


def test_float_runner_passes_floats_through(runners: RunnerPool) -> None:
    runner = runners.get("efficientnet_lite0", Variant.FP32)
    batch = np.random.default_rng(1).normal(size=(1, 224, 224, 3)).astype(np.float32)

    assert runner.quantize_input(batch) is batch or np.array_equal(
        runner.quantize_input(batch), batch
    )


def test_int8_predict_returns_a_distribution(runners: RunnerPool) -> None:
    batch = np.random.default_rng(2).uniform(-1, 1, (3, 224, 224, 3)).astype(np.float32)

    probabilities = runners.get("efficientnet_lite0", Variant.INT8).predict(batch)

    assert probabilities.shape == (3, 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_to_probabilities_renormalizes_a_rounded_softmax() -> None:
    # A uint8 softmax over 1000 classes: small classes round to 0, so rows sum below 1.
    rounded = np.zeros((1, 1000), np.float32)
    rounded[0, :3] = [0.41, 0.37, 0.18]

    probabilities = to_probabilities(rounded, "probabilities")

    np.testing.assert_allclose(probabilities[0, :3], np.array([0.41, 0.37, 0.18]) / 0.96, rtol=1e-6)


def test_to_probabilities_follows_the_declared_kind_row_by_row() -> None:
    # The same numbers read as probabilities stay; read as logits they get a softmax.
    rows = np.array([[0.7, 0.2, 0.1], [2.0, 1.0, 0.0]], np.float32)

    as_probabilities = to_probabilities(rows[:1], "probabilities")
    as_logits = to_probabilities(rows, "logits")

    np.testing.assert_allclose(as_probabilities[0], [0.7, 0.2, 0.1], rtol=1e-6)
    np.testing.assert_allclose(as_logits[1], np.exp([2, 1, 0]) / np.exp([2, 1, 0]).sum(), rtol=1e-6)
    # A row's answer never depends on its batch mates.
    np.testing.assert_allclose(to_probabilities(rows[1:], "logits"), as_logits[1:])


def test_to_probabilities_applies_a_stable_softmax_to_logits() -> None:
    logits = np.array([[1000.0, 999.0, -5.0]], np.float32)

    probabilities = to_probabilities(logits, "logits")

    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-6)
    assert probabilities[0, 0] == pytest.approx(1 / (1 + np.exp(-1.0)), rel=1e-4)


def test_top_k_is_sorted_and_capped_at_the_class_count() -> None:
    labels = ("a", "b", "c")
    result = top_k(np.array([0.2, 0.5, 0.3]), labels, k=10)

    assert [c.label for c in result] == ["b", "c", "a"]
    assert [c.index for c in result] == [1, 2, 0]
    assert len(top_k(np.array([0.2, 0.5, 0.3]), labels, k=1)) == 1


def test_inspect_tflite_recognises_each_variant(runners: RunnerPool) -> None:
    variants = (Variant.FP32, Variant.FP16, Variant.DYNAMIC, Variant.INT8)
    for variant, path in runners.convert("efficientnet_lite0", variants).items():
        facts = inspect_tflite(path)
        assert (facts.input_shape, facts.classes, facts.variant) == ((224, 224, 3), 1000, variant)
        assert facts.outputs == "probabilities"  # the graph ends in a softmax


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_cache_file_is_rebuilt_not_served(
    runners: RunnerPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    spec = get_spec("efficientnet_lite0")
    made = runners.convert("efficientnet_lite0", [Variant.FP32, Variant.FP16])
    good = made[Variant.FP16]
    monkeypatch.setenv("QUANTLENS_CACHE_DIR", str(tmp_path))
    # The float file fp16 is made from is there already (copied: this is not about it).
    for source in (made[Variant.FP32], made[Variant.FP32].with_suffix(".json")):
        shutil.copy(source, float_path(spec).with_suffix(source.suffix))
    path = variant_path(spec, Variant.FP16)
    data = good.read_bytes()
    # A file cut short keeps its valid header; garbage has none.
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * 64)

    rebuilt = ensure_variants(spec, [Variant.FP16])[Variant.FP16]

    assert rebuilt == path
    assert rebuilt.read_bytes()[4:8] == b"TFL3"
    assert abs(rebuilt.stat().st_size - good.stat().st_size) < 0.01 * good.stat().st_size


def test_running_a_tflite_variant_does_not_import_tensorflow(
    runners: RunnerPool, chelsea: Path
) -> None:
    runners.convert("efficientnet_lite0", [Variant.INT8])  # make sure the file is cached
    script = textwrap.dedent(
        f"""
        import sys
        import inference
        from inference import classify, get_spec, load_runner
        runner = load_runner(get_spec("efficientnet_lite0"), "int8")
        print(classify(runner, {str(chelsea)!r}).top_k[0].label)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        print("loaded:", loaded)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )

    label, loaded = result.stdout.strip().splitlines()
    assert label in {"tabby", "tiger_cat", "Egyptian_cat"}
    assert loaded == "loaded: []"
