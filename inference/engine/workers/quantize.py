"""The quantizer child: ``python -m inference.engine.workers.quantize < request.json``.

Makes variants from a float ``.tflite`` with Google's ai-edge-quantizer, one
recipe per job, without TensorFlow. Calibrated recipes (integer activations)
measure each tensor's range on the same sample views for every job.

Calibration keeps each tensor's overall minimum and maximum over the samples
(``qsv_utils.min_max_update``), as TensorFlow Lite's converter does. The
quantizer's default averages the per-sample extremes instead; on
EfficientNet-Lite0 that narrowed the logits' range from [-4.9, 12.1] to [-3.4, 6.7], so
the top classes saturated at the same value (coffee: espresso, cup and
consomme all at 0.22, against 0.97 with overall min/max).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from ai_edge_quantizer import calibrator, quantizer, recipe_manager
from ai_edge_quantizer.utils import qsv_utils

from inference.core.child_process import emit, serve, write_atomically
from inference.core.errors import InputError
from inference.core.specs import Preprocessing
from inference.formats.calibration import representative_samples
from inference.formats.tflite_file import signature_input
from inference.formats.tflite_metadata import with_metadata

CALIBRATION_THREADS = 2


def progress(message: str, fraction: float) -> None:
    emit(event="progress", message=message, fraction=fraction)


def calibrate_ranges(
    model: bytes, rules: list[dict[str, Any]], dataset: dict[str, list[dict[str, np.ndarray]]]
) -> dict[str, Any]:
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(rules)
    calibration = calibrator.Calibrator(
        model, num_threads=CALIBRATION_THREADS, qsv_update_func=qsv_utils.min_max_update
    )
    calibration.calibrate(dataset, manager)
    return calibration.get_model_qsvs()


def fixed_ranges(float_path: Path, ranges: dict[str, list[float]]) -> dict[str, Any]:
    """``{tensor: [min, max]}`` as the quantizer's calibration result (one value per tensor)."""
    ranks = {
        t["name"]: len(t["shape"])
        for t in Interpreter(model_path=str(float_path)).get_tensor_details()
    }
    return {
        name: {
            "min": np.full((1,) * ranks.get(name, 1), low, np.float32),
            "max": np.full((1,) * ranks.get(name, 1), high, np.float32),
        }
        for name, (low, high) in ranges.items()
    }


def quantize(request: dict[str, Any]) -> dict[str, Any]:
    float_path = Path(request["float"])
    model = float_path.read_bytes()
    jobs = request["jobs"]
    dataset: dict[str, list[dict[str, np.ndarray]]] | None = None
    qsvs: dict[str, Any] | None = None
    seconds: dict[str, float] = {}
    for done, job in enumerate(jobs):
        name, rules, output = job["name"], job["rules"], Path(job["output"])
        progress(f"quantizing {name}", 0.4 + 0.6 * done / len(jobs))
        start = time.perf_counter()
        try:
            qt = quantizer.Quantizer(model, rules)
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"recipe {name}: ai-edge-quantizer refused it ({exc})") from None
        result = None
        if qt.need_calibration and job.get("ranges"):
            # Ranges read from a file made elsewhere: its very activation scales, no calibration.
            result = qt.quantize(
                fixed_ranges(float_path, json.loads(job["ranges"])), enable_progress_report=False
            )
        if result is None and qt.need_calibration and qsvs is not None:
            # Ranges are statistics of the float model on the same samples, whatever the
            # bit width: int16x8 reuses int8's. A recipe that quantizes tensors the last
            # one kept in float lacks some, and the quantizer says so: calibrate again.
            try:
                result = qt.quantize(qsvs, enable_progress_report=False)
            except ValueError:
                result = None
        if result is None and qt.need_calibration:
            if dataset is None:
                key, input_name = signature_input(
                    Interpreter(model_path=str(float_path)), float_path
                )
                preprocessing = Preprocessing(**request["preprocessing"])
                images = [Path(p) for p in request["calibration"]]
                samples = list(representative_samples(preprocessing, images))
                dataset = {key: [{input_name: sample} for sample in samples]}
            progress(f"calibrating {name}", 0.4 + 0.6 * done / len(jobs))
            qsvs = calibrate_ranges(model, rules, dataset)
        if result is None:
            result = qt.quantize(
                qsvs if qt.need_calibration else None, enable_progress_report=False
            )
        made = bytes(result.quantized_model)
        if request.get("metadata"):  # the quantizer keeps the metadata but drops the labels
            made = with_metadata(made, **request["metadata"])
        write_atomically(output, made)
        seconds[name] = time.perf_counter() - start
        record = {"recipe_name": name, "recipe": rules, "made_by": "ai-edge-quantizer",
                  "seconds": round(seconds[name], 2)}  # fmt: skip
        write_atomically(output.with_suffix(".json"), json.dumps(record, indent=1).encode())
        progress(f"{name} done in {seconds[name]:.1f} s", 0.4 + 0.6 * (done + 1) / len(jobs))
    return {"seconds": seconds}


if __name__ == "__main__":
    sys.exit(serve(quantize))
