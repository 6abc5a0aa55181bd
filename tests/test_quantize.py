"""Variants from recipes (ai-edge-quantizer, no TensorFlow) and the per-layer comparison."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference import (
    ZOO,
    ConversionError,
    InputError,
    Variant,
    classify,
    custom_spec,
    decode_image,
    load_runner,
    preprocess,
)
from inference.analysis.layer_report import compare_layers, snr_db
from inference.core.specs import TFLITE_VARIANTS
from inference.engine.convert import ensure_recipe, ensure_variants, recipe_path, variant_path
from inference.formats.recipes import MAX_RECIPE_BYTES, builtin_recipe, load_recipe, parse_recipe
from tests.conftest import CAT_CLASSES, REPO_ROOT, RunnerPool, run_cli

NO_QUANTIZE = {"regex": ".*", "operation": "SOFTMAX", "algorithm_key": "no_quantize"}


# --- recipes ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [v for v in Variant if v.is_quantized])
def test_every_quantized_variant_has_a_valid_built_in_recipe(variant: Variant) -> None:
    recipe = builtin_recipe(variant)

    assert recipe.rules and recipe.name == variant.value
    assert recipe.needs_calibration == (variant in (Variant.INT8, Variant.INT16X8))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"regex": ".*"}', "expected a JSON list of rules"),
        ("[]", "expected a JSON list of rules"),
        ('[{"regex": ".*", "operation": "*", "algorithm_key": "no_quantize", "evil": 1}]',
         "unknown field 'evil'"),
        ('[{"regex": "(", "operation": "*", "algorithm_key": "no_quantize"}]', "does not compile"),
        ('[{"regex": ".*", "operation": "conv; rm -rf /", "algorithm_key": "no_quantize"}]',
         "expected operation"),
        ('[{"regex": ".*", "operation": "*", "algorithm_key": "min_max_uniform_quantize"}]',
         "expected an 'op_config'"),
        ('[{"regex": 5, "operation": "*", "algorithm_key": "no_quantize"}]',
         "expected 'regex' to be a string"),
    ],
    ids=["json", "object", "empty", "field", "regex", "operation", "op_config", "type"],
)  # fmt: skip
def test_bad_recipes_get_one_line(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as error:
        parse_recipe(text, name="mine")

    assert str(error.value).startswith("mine") and "\n" not in str(error.value)


def test_an_oversize_recipe_is_refused_before_parsing(tmp_path: Path) -> None:
    rule = json.dumps(NO_QUANTIZE)
    path = tmp_path / "huge.json"
    path.write_text("[" + ",".join([rule] * (MAX_RECIPE_BYTES // len(rule) + 1)) + "]")

    with pytest.raises(InputError, match="over 256 KB is refused"):
        load_recipe(path)


def test_keep_float_appends_no_quantize_rules_that_win() -> None:
    recipe = builtin_recipe(Variant.INT8).keeping_float(("blocks\\.10\\.",), ("softmax",))

    assert recipe.rules[-2:] == [
        {"algorithm_key": "no_quantize", "operation": "*", "regex": "blocks\\.10\\."},
        # A regex of its own: ai-edge-quantizer merges rules that share one.
        {"algorithm_key": "no_quantize", "operation": "SOFTMAX", "regex": ".*(?#float SOFTMAX)"},
    ]
    assert recipe.name == "int8, float: blocks\\.10\\., SOFTMAX"
    with pytest.raises(InputError, match="does not compile"):
        builtin_recipe(Variant.INT8).keeping_float(("[",))


def test_the_cache_key_follows_the_recipe_content(tmp_path: Path) -> None:
    spec = ZOO["efficientnet_lite0"]
    int8 = builtin_recipe(Variant.INT8)
    same = parse_recipe(json.dumps(int8.rules, indent=4), name="int8")
    kept = int8.keeping_float(operations=("SOFTMAX",))
    photo = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(photo)

    assert recipe_path(spec, same) == recipe_path(spec, int8) == variant_path(spec, Variant.INT8)
    assert recipe_path(spec, kept) != recipe_path(spec, int8)
    # Calibration images matter only to recipes that calibrate.
    assert recipe_path(spec, int8, [photo]) != recipe_path(spec, int8)
    w4 = builtin_recipe(Variant.W4)
    assert recipe_path(spec, w4, [photo]) == recipe_path(spec, w4)


# --- the quantizer child, without TensorFlow ----------------------------------------------


def test_quantizing_a_float_file_never_imports_tensorflow(
    runners: RunnerPool, tmp_path: Path
) -> None:
    source = runners.path("efficientnet_lite0", Variant.FP32)
    request = {
        "float": str(source),
        "preprocessing": {"size": [224, 224], "normalize": "lite", "color_mode": "RGB",
                          "crop_fraction": 0.875, "resample": "bicubic"},
        "calibration": [str(REPO_ROOT / "assets" / "calibration")],
        "jobs": [{"name": "w4", "rules": builtin_recipe(Variant.W4).rules,
                  "output": str(tmp_path / "w4.tflite")}],
    }  # fmt: skip
    script = textwrap.dedent(
        """
        import json, sys
        from inference.engine.workers import quantize as quantize_worker
        sys.stdin = __import__("io").StringIO(sys.argv[1])
        status = quantize_worker.serve(quantize_worker.quantize)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        print("loaded:", loaded, "status:", status)
        """
    )
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", script, json.dumps(request)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )

    assert result.stdout.strip().splitlines()[-1] == "loaded: [] status: 0", result.stderr[-2000:]
    assert "tensorflow" not in result.stderr  # -X importtime lists every module imported
    assert (tmp_path / "w4.tflite").read_bytes()[4:8] == b"TFL3"


def test_a_crashing_quantizer_is_reported_and_the_float_file_survives(
    runners: RunnerPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = runners.path("efficientnet_lite0", Variant.FP32)
    mine = tmp_path / "mine.tflite"
    mine.write_bytes(source.read_bytes())
    spec = custom_spec(mine, normalize="lite")
    monkeypatch.setenv("QUANTLENS_CACHE_DIR", str(tmp_path / "cache"))
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nkill -SEGV $$\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))

    log = tmp_path / "cache" / f"{spec.name}.quantize.log"
    with pytest.raises(
        ConversionError,
        match=rf"^{spec.name}: quantization: the process exited with status -11; "
        rf"see {re.escape(str(log))}$",
    ):
        ensure_variants(spec, [Variant.W4], timeout=30)
    assert mine.read_bytes() == source.read_bytes()


# --- a float .tflite someone brings ---------------------------------------------------------


def test_the_zoo_fp32_file_brought_back_gets_every_variant_and_the_same_answers(
    runners: RunnerPool, brought_lite0: Path, chelsea: Path, tmp_path: Path
) -> None:
    zoo = ZOO["efficientnet_lite0"]
    mine = brought_lite0  # its int8 may be made already, by tests/test_metadata.py
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(zoo.labels) + "\n")

    spec = custom_spec(mine, labels, normalize="lite")
    # Your own model is fed whole images (no central crop): compare on the same input.
    batch = preprocess(decode_image(chelsea), zoo.preprocessing)

    assert spec.variants == TFLITE_VARIANTS
    ensure_variants(spec, [Variant.INT8, Variant.W4])  # one quantizer run for both
    runners.convert("efficientnet_lite0", [Variant.INT8, Variant.W4])
    for variant in (Variant.FP32, Variant.INT8, Variant.W4):
        theirs = runners.get("efficientnet_lite0", variant).predict(batch)[0]
        ours = load_runner(spec, variant).predict(batch)[0]
        assert spec.labels[int(ours.argmax())] == zoo.labels[int(theirs.argmax())], variant
        np.testing.assert_allclose(ours, theirs, atol=0.02)


# --- per-layer comparison -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A two-conv float model, its int8 file calibrated on dark images, and a bright image."""
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="first"),
            keras.layers.Conv2D(2, 3, name="second"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Softmax(),
        ]
    )
    folder = tmp_path_factory.mktemp("tiny")
    path = folder / "tiny.keras"
    model.save(path)
    dark = folder / "dark"
    dark.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        pixels = rng.integers(0, 40, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(dark / f"{i}.png")
    bright = folder / "bright.png"
    Image.fromarray(rng.integers(150, 256, (8, 8, 3), dtype=np.uint8)).save(bright)
    spec = custom_spec(path, normalize="unit")
    files = ensure_variants(spec, [Variant.FP32, Variant.INT8], calibration=[dark])
    return files[Variant.FP32], files[Variant.INT8], bright


def _all_tensors(path: Path, batch: np.ndarray) -> dict[str, tuple[np.ndarray, dict]]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer):
        batch = np.clip(np.rint(batch / scale) + zero_point, -128, 127).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], batch)
    interpreter.invoke()
    return {
        t["name"]: (interpreter.get_tensor(t["index"]), t) for t in interpreter.get_tensor_details()
    }


@pytest.mark.slow
def test_snr_and_clipped_fraction_match_a_hand_computation(
    tiny_pair: tuple[Path, Path, Path],
) -> None:
    from inference.core.specs import Preprocessing
    from inference.formats.images import decode_image, preprocess

    reference, candidate, bright = tiny_pair
    pre = Preprocessing((8, 8), normalize="unit", crop_fraction=1.0)
    batch = preprocess(decode_image(bright), pre)

    report = compare_layers(reference, candidate, [batch])

    ref_tensors = _all_tensors(reference, batch)
    cand_tensors = _all_tensors(candidate, batch)
    checked = 0
    for record in report.records:
        ref = ref_tensors[record.tensor][0].astype(np.float64)
        raw, detail = cand_tensors[record.tensor]
        scale, zero_point = detail["quantization"]
        if not np.issubdtype(detail["dtype"], np.integer) or scale == 0:
            continue
        dequantized = (raw.astype(np.float64) - zero_point) * scale
        noise = np.mean((dequantized - ref) ** 2)
        expected_db = 10 * math.log10(np.mean(ref**2) / noise) if noise else None
        low, high = (-128 - zero_point) * scale, (127 - zero_point) * scale
        expected_clipped = np.mean((ref < low) | (ref > high))
        if expected_db is not None:
            assert record.snr_db == pytest.approx(expected_db, abs=0.01), record.tensor
        assert record.clipped == pytest.approx(expected_clipped, abs=1e-9), record.tensor
        checked += 1
    assert checked >= 3
    # Calibrated on dark images, the bright one overflows the first layer's range.
    first = report.records[0]
    assert first.clipped is not None and first.clipped > 0.05 and first.snr_db < 10
    assert [r.index for r in report.records] == sorted(r.index for r in report.records)


def test_snr_in_decibels() -> None:
    assert snr_db(100.0) == pytest.approx(20.0)
    assert snr_db(1.0) == 0.0
    assert snr_db(float("inf")) == 200.0


@pytest.mark.slow
def test_layers_json_gives_one_record_per_tensor_in_order(
    runners: RunnerPool, coffee: Path
) -> None:
    runners.convert("efficientnet_lite0", [Variant.FP32, Variant.INT8])

    result = run_cli("layers", str(coffee), "--model", "efficientnet_lite0", "--variant", "int8",
                     "--json")  # fmt: skip

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 61  # every op output of Lite0's graph
    assert [r["index"] for r in rows] == list(range(61))
    contract = {"index", "tensor", "op", "shape", "snr_db", "cosine", "mse", "clipped"}
    assert contract <= set(rows[0])
    assert rows[-1]["op"] == "SOFTMAX" and rows[-1]["snr_db"] > 20


@pytest.mark.slow
def test_quantize_command_builds_a_recipe_variant_with_layers_in_float(
    runners: RunnerPool, chelsea: Path, tmp_path: Path
) -> None:
    runners.convert("efficientnet_lite0", [Variant.FP32, Variant.W4])

    result = run_cli("quantize", "--model", "efficientnet_lite0", "--recipe", "w4",
                     "--keep-float-op", "FULLY_CONNECTED", "--json")  # fmt: skip

    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["recipe"] == "w4, float: FULLY_CONNECTED"
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(ZOO["efficientnet_lite0"].labels) + "\n")
    spec = custom_spec(made["path"], labels, normalize="lite")
    assert spec.variants == (Variant.W4,)  # a quantized file runs as itself
    plain = ensure_recipe(ZOO["efficientnet_lite0"], load_recipe("w4"))
    assert Path(made["path"]).stat().st_size > plain.stat().st_size  # the FC weights stay float
    prediction = classify(load_runner(spec, Variant.W4), chelsea)
    assert prediction.top_k[0].label in CAT_CLASSES


@pytest.mark.slow
def test_layers_and_quantize_take_the_pages_selection(runners: RunnerPool, coffee: Path) -> None:
    runners.convert("efficientnet_lite0", [Variant.W4])
    plain = run_cli("layers", str(coffee), "--model", "efficientnet_lite0", "--variant", "w4",
                    "--json")  # fmt: skip
    kept = run_cli("layers", str(coffee), "--model", "efficientnet_lite0", "--variant", "w4",
                   "--keep-worst", "3", "--keep-float-op", "FULLY_CONNECTED", "--json")  # fmt: skip

    assert plain.returncode == 0 and kept.returncode == 0, kept.stderr
    before, after = json.loads(plain.stdout), json.loads(kept.stdout)
    worst = sorted(before, key=lambda r: (-r["loss_db"], r["snr_db"]))[:3]
    by_tensor = {r["tensor"]: r for r in after}
    for record in worst:  # the three that lose most SNR now run in float: their SNR changed
        assert by_tensor[record["tensor"]]["snr_db"] != record["snr_db"]
    fc = next(r for r in after if r["op"] == "FULLY_CONNECTED")
    assert fc["snr_db"] > next(r for r in before if r["op"] == "FULLY_CONNECTED")["snr_db"]

    made = run_cli("quantize", "--model", "efficientnet_lite0", "--recipe", "w4",
                   "--keep-worst", "3", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["recipe"] == "w4, float: 3 tensors"


def test_keeping_worst_needs_a_report() -> None:
    from inference.analysis.layer_report import FloatSelection

    with pytest.raises(InputError, match="needs a layer report"):
        FloatSelection(worst=2).apply(builtin_recipe(Variant.INT8))
    kept = FloatSelection(tensors=("a;b",), operations=("softmax",)).apply(
        builtin_recipe(Variant.INT8)
    )
    assert kept.rules[-2]["regex"] == "^a;b;" and kept.rules[-1]["operation"] == "SOFTMAX"


@pytest.mark.slow
def test_snr_lost_per_op_is_its_inputs_snr_minus_its_own(
    tiny_pair: tuple[Path, Path, Path],
) -> None:
    from inference.analysis.layer_report import CLEAN_SNR_DB
    from inference.core.specs import Preprocessing
    from inference.formats.images import decode_image, preprocess

    reference, candidate, bright = tiny_pair
    batch = preprocess(
        decode_image(bright), Preprocessing((8, 8), normalize="unit", crop_fraction=1.0)
    )

    records = compare_layers(reference, candidate, [batch]).records

    # A chain: each op's one activation input is the previous op's output.
    assert records[1].loss_db == pytest.approx(max(0.0, records[0].snr_db - records[1].snr_db))
    assert records[0].loss_db <= CLEAN_SNR_DB
