"""A quantized file made elsewhere, read back as a recipe and rebuilt from the float model.

The files are made outside the app with ai-edge-quantizer's own API (with its
own calibration on random inputs, not ours), so a rebuild that matches them
tensor by tensor and output by output has read their scheme, not ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from ai_edge_quantizer import quantizer

from inference import Variant, get_spec
from inference.analysis.rebuild import OUTPUT_TOLERANCE, check_rebuild, rebuild_scheme
from inference.engine.convert import ensure_recipe, float_path
from inference.formats.recipes import builtin_recipe, tensor_regex
from inference.registry.user_models import custom_spec
from tests.conftest import RunnerPool, run_cli

pytestmark = pytest.mark.slow

FASHION = get_spec("fashion_mnist_cnn")


def _made_elsewhere(float_file: Path, variant: Variant, out: Path) -> Path:
    qt = quantizer.Quantizer(str(float_file), builtin_recipe(variant).rules)
    calibration = None
    if qt.need_calibration:
        rng = np.random.default_rng(7)
        samples = [rng.uniform(-1, 1, (1, 28, 28, 1)).astype(np.float32) for _ in range(4)]
        calibration = qt.calibrate({"serving_default": [{"image": s} for s in samples]})
    qt.quantize(calibration, enable_progress_report=False).export_model(str(out), overwrite=True)
    return out


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.uniform(-1, 1, (1, 28, 28, 1)).astype(np.float32) for _ in range(4)]


@pytest.fixture(scope="module")
def fashion_float(runners: RunnerPool) -> Path:
    runners.get(FASHION.name, Variant.FP32)
    return float_path(FASHION)


@pytest.mark.parametrize("variant", [Variant.INT8, Variant.DYNAMIC, Variant.W4, Variant.FP16])
def test_a_file_made_elsewhere_is_rebuilt_tensor_for_tensor(
    fashion_float: Path, tmp_path: Path, variant: Variant
) -> None:
    theirs = _made_elsewhere(fashion_float, variant, tmp_path / f"theirs-{variant}.tflite")
    spec = custom_spec(fashion_float)

    scheme, rebuilt = rebuild_scheme(spec, theirs)
    check = check_rebuild(theirs, rebuilt, _inputs(), scheme)

    assert check.same, check.as_dict()
    assert check.max_output_difference <= OUTPUT_TOLERANCE and not check.unexpressed
    if variant is Variant.INT8:  # their calibration, not ours: the ranges came from the file
        assert scheme.ranges and not scheme.recipe.needs_calibration


def test_keeping_an_op_of_a_file_made_elsewhere_in_float(
    fashion_float: Path, tmp_path: Path
) -> None:
    theirs = _made_elsewhere(fashion_float, Variant.INT8, tmp_path / "theirs.tflite")
    spec = custom_spec(fashion_float)
    scheme, _ = rebuild_scheme(spec, theirs)
    conv = next(
        t["name"]
        for t in Interpreter(model_path=str(theirs)).get_tensor_details()
        if "b2c1" in t["name"] and t["dtype"] == np.int8 and "Relu" in t["name"]
    )

    fixed = ensure_recipe(spec, scheme.recipe.keeping_float((tensor_regex(conv),)))

    kinds = {t["name"]: t["dtype"] for t in Interpreter(model_path=str(fixed)).get_tensor_details()}
    assert kinds[conv] == np.float32
    others = [n for n, d in kinds.items() if d == np.int8 and "Relu" in n]
    assert others  # the rest stays int8


def test_the_check_names_the_tensors_a_rebuild_gets_wrong(
    fashion_float: Path, tmp_path: Path
) -> None:
    """A rebuild with *our* calibration instead of the file's ranges: the check must see it."""
    theirs = _made_elsewhere(fashion_float, Variant.INT8, tmp_path / "theirs.tflite")
    spec = custom_spec(fashion_float)
    scheme, _ = rebuild_scheme(spec, theirs)
    ours = ensure_recipe(spec, builtin_recipe(Variant.INT8))

    check = check_rebuild(theirs, ours, _inputs(), scheme)

    assert not check.same
    assert check.differing and check.max_output_difference > OUTPUT_TOLERANCE
    reported = check.as_dict()
    assert reported["differing"] == list(check.differing) and reported["same"] is False


def test_the_layers_command_fixes_a_file_made_elsewhere(
    fashion_float: Path, tmp_path: Path, runners: RunnerPool
) -> None:
    theirs = _made_elsewhere(fashion_float, Variant.INT8, tmp_path / "theirs.tflite")
    image = tmp_path / "bag.png"
    sample = next((FASHION.labelled_sample / "bag").glob("*.png"))
    image.write_bytes(sample.read_bytes())

    fixed = run_cli("layers", str(image), "--reference", str(fashion_float), "--candidate",
                    str(theirs), "--keep-float-op", "FULLY_CONNECTED", "--json")  # fmt: skip

    assert fixed.returncode == 0, fixed.stderr
    assert "read back as a recipe gives the same" in fixed.stderr
    rows = json.loads(fixed.stdout)
    dense = [r for r in rows if r["op"] == "FULLY_CONNECTED"]
    assert dense and all(r["clipped"] is None for r in dense)  # kept in float: no int range
