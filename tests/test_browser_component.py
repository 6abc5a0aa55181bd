"""The browser runner: what ships for it, and the files it is given."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from inference import ZOO, Variant, decode_image, preprocess
from inference.engine.convert import browser_path
from inference.formats.tflite_file import open_interpreter
from tests.conftest import REPO_ROOT, RunnerPool

COMPONENT = REPO_ROOT / "components" / "browser_runner"
LITE0 = ZOO["efficientnet_lite0"]


def test_the_built_component_ships_under_15_mb_and_fetches_nothing_remote() -> None:
    build = COMPONENT / "build"
    files = {p.name: p.stat().st_size for p in build.iterdir()}
    assert set(files) == {
        "index.html", "main.js", "litert_wasm_compat_internal.js",
        "litert_wasm_compat_internal.wasm",
    }  # fmt: skip
    assert sum(files.values()) < 15_000_000
    page = (build / "index.html").read_text()
    assert re.findall(r'src="([^"]+)"', page) == ["./main.js"]
    bundle = (build / "main.js").read_text()
    assert "cdn.jsdelivr" not in bundle and "./litert_wasm_compat_internal.js" in bundle
    lock = (COMPONENT / "package-lock.json").read_text()
    assert '"@litertjs/core": "2.5.3"' in (COMPONENT / "package.json").read_text()
    assert "node_modules/@litertjs/core" in lock  # the build is reproducible with npm ci


def _run(path: Path, batch: np.ndarray) -> np.ndarray:
    interpreter = open_interpreter(path)
    interpreter.allocate_tensors()
    detail, output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    if detail["dtype"] != np.float32:  # what the server's runner does around the interpreter
        scale, zero = detail["quantization"]
        batch = np.clip(np.rint(batch / scale) + zero, -128, 127).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], batch)
    interpreter.invoke()
    values = interpreter.get_tensor(output["index"]).astype(np.float32)
    if output["dtype"] != np.float32:
        scale, zero = output["quantization"]
        values = (values - zero) * scale
    return values


def test_browser_files_have_batch_1_a_float_interface_and_the_same_outputs(
    runners: RunnerPool, coffee: Path
) -> None:
    batch = preprocess(decode_image(coffee), LITE0.preprocessing).astype(np.float32)
    files = runners.convert("efficientnet_lite0", [Variant.FP32, Variant.INT8, Variant.W4])
    for variant, original in files.items():
        web = browser_path(LITE0, variant)
        interpreter = open_interpreter(web)
        (detail,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
        assert list(detail["shape_signature"]) == [1, 224, 224, 3]
        assert detail["dtype"] == output["dtype"] == np.float32
        assert interpreter.get_signature_list() == {
            "serving_default": {"inputs": ["image"], "outputs": ["output_0"]}
        }
        np.testing.assert_array_equal(_run(web, batch), _run(original, batch))
        assert int(np.argmax(_run(web, batch))) == LITE0.labels.index("espresso")
