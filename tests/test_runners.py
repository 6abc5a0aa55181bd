"""Runner plumbing: quantized I/O, probabilities, top-k, cache files, no TensorFlow on TFLite."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from inference import InputError, LiteRTRunner, Variant, decode_image, get_spec, preprocess, top_k
from inference.engine.convert import ensure_variants, float_path, variant_path
from inference.engine.runners import _quantize_into, _quantize_plan, to_probabilities
from inference.formats.tflite_file import inspect_tflite, open_interpreter
from tests.conftest import REPO_ROOT, RunnerPool

# predict computes the formula's float32 operations in place: the same floats, at most
# float32 rounding apart.
FLOAT32_RTOL = 1e-6


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


def _photos(paths: list[Path]) -> np.ndarray:
    spec = get_spec("efficientnet_lite0").preprocessing
    return np.concatenate([preprocess(decode_image(path), spec) for path in paths])


def _by_the_formula(runner: LiteRTRunner, batch: np.ndarray) -> np.ndarray:
    """quantize -> invoke -> dequantize -> probabilities, by hand on a fresh interpreter."""
    interpreter = open_interpreter(runner.path, 1)
    feed, read = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for row in batch:
        x = row[None]
        if np.issubdtype(feed["dtype"], np.integer):
            scale, zero = feed["quantization"]
            info = np.iinfo(feed["dtype"])
            x = np.clip(np.rint(x / scale) + zero, info.min, info.max).astype(feed["dtype"])
        interpreter.set_tensor(feed["index"], x)
        interpreter.invoke()
        out = interpreter.get_tensor(read["index"]).astype(np.float32)
        if np.issubdtype(read["dtype"], np.integer):
            scale, zero = read["quantization"]
            out = (out - zero) * scale
        rows.append(out)
    scores = np.clip(np.concatenate(rows), 0.0, 1.0)  # Lite0 ends in a softmax
    return scores / scores.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("variant", [Variant.INT8, Variant.FP32])
def test_predict_equals_the_formula_on_real_photos(
    runners: RunnerPool, chelsea: Path, coffee: Path, variant: Variant
) -> None:
    runner = runners.get("efficientnet_lite0", variant)
    assert isinstance(runner, LiteRTRunner)
    batch = _photos([chelsea, coffee])

    one = runner.predict(batch[:1])
    both = runner.predict(batch)

    expected = _by_the_formula(runner, batch)
    np.testing.assert_allclose(one, expected[:1], rtol=FLOAT32_RTOL, atol=0)
    np.testing.assert_allclose(both, expected, rtol=FLOAT32_RTOL, atol=0)
    np.testing.assert_array_equal(runner.predict(batch[0]), one)  # (H, W, C) is a batch of one
    assert one.dtype == np.float32 and both.shape == (2, 1000)


def test_quantize_matches_the_formula_on_ties_and_saturation() -> None:
    # A power-of-two scale is multiplied by its reciprocal, any other is divided by:
    # both must give the formula's integers, on exact .5 steps (rint rounds them to
    # even) and beyond the int8 range (saturation).
    for scale, zero, multiplies in [(1 / 128, -1, True), (2.0**-9, 0, True), (0.0123, 5, False)]:
        halves = np.arange(-300, 300, dtype=np.float32) / 2 * np.float32(scale)
        values = np.concatenate([halves, np.linspace(-3, 3, 1001, dtype=np.float32)])
        plan = _quantize_plan((scale, zero), np.dtype(np.int8), np.float32)
        out = np.empty(values.shape, np.int8)

        assert plan is not None and plan.multiply is multiplies
        _quantize_into(values, plan, out, np.empty_like(values))

        formula = np.clip(np.rint(values / scale) + zero, -128, 127).astype(np.int8)
        np.testing.assert_array_equal(out, formula)
        assert out.min() == -128 and out.max() == 127


def test_predict_refuses_a_batch_of_the_wrong_shape(runners: RunnerPool) -> None:
    runner = runners.get("efficientnet_lite0", Variant.INT8)

    with pytest.raises(InputError, match=r"expected a batch of shape \(N, 224, 224, 3\)"):
        runner.predict(np.zeros((1, 1, 224, 3), np.float32))


def test_predict_is_safe_to_share_between_threads(
    runners: RunnerPool, chelsea: Path, coffee: Path
) -> None:
    runner = runners.get("efficientnet_lite0", Variant.INT8)
    batch = _photos([chelsea, coffee])
    expected = [runner.predict(row) for row in batch]
    answers: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def work(which: int) -> None:
        for _ in range(10):
            answers[which].append(runner.predict(batch[which]))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1, 0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for which, got in answers.items():
        assert len(got) == 20
        for probabilities in got:  # the shared scratch buffer never mixes two images
            np.testing.assert_array_equal(probabilities, expected[which])


def test_invoke_raw_is_the_interpreter_alone(runners: RunnerPool, chelsea: Path) -> None:
    runner = runners.get("efficientnet_lite0", Variant.INT8)
    assert isinstance(runner, LiteRTRunner)
    batch = _photos([chelsea])

    raw = runner.invoke_raw(runner.quantize_input(batch))

    assert raw.dtype == runner.output_dtype and raw.shape == (1, 1000)
    np.testing.assert_allclose(
        to_probabilities(runner.dequantize_output(raw), "probabilities"),
        runner.predict(batch),
        rtol=FLOAT32_RTOL,
    )
