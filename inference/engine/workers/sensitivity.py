"""The sensitivity-scan child: ``python -m inference.engine.workers.sensitivity < request.json``.

Two jobs, both without TensorFlow:

- ``calibrate``: measure every tensor's range on the calibration samples once,
  with the variant's full recipe, and write the ranges to a file;
- ``scan``: for each target (one op, or one block of ops), quantize *only* that
  target with the variant's recipe (every other op keeps float through one
  ``no_quantize`` rule whose regex skips the target), reuse the ranges, run the
  model on the scan's inputs and compare its outputs with the float model's.

The parent starts one ``calibrate`` and then several ``scan`` children in
parallel, each with a share of the targets (:mod:`inference.analysis.sensitivity`).
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from ai_edge_quantizer import quantizer

from inference.core.child_process import emit, serve, write_atomically
from inference.core.specs import Preprocessing
from inference.engine.workers.quantize import calibrate_ranges, fixed_ranges
from inference.formats.calibration import representative_samples
from inference.formats.tflite_file import model_outputs, signature_input

NO_QUANTIZE = "no_quantize"


def only(target_regex: str) -> dict[str, Any]:
    """A rule that keeps every op in float except those ``target_regex`` finds in their scope.

    ai-edge-quantizer applies the last matching rule and matches with ``re.search``.
    """
    return {"regex": f"^(?!.*(?:{target_regex}))", "operation": "*", "algorithm_key": NO_QUANTIZE}


def _calibrate(request: dict[str, Any]) -> dict[str, Any]:
    float_path = Path(request["float"])
    model = float_path.read_bytes()
    qt = quantizer.Quantizer(model, request["rules"])
    if not qt.need_calibration:
        return {"calibrated": False}
    if request.get("ranges"):  # a file made elsewhere: its own activation ranges
        ranges = fixed_ranges(float_path, json.loads(request["ranges"]))
        write_atomically(Path(request["output"]), pickle.dumps(ranges))
        return {"calibrated": True}
    key, input_name = signature_input(Interpreter(model_path=str(float_path)), float_path)
    preprocessing = Preprocessing(**request["preprocessing"])
    images = [Path(p) for p in request["calibration"]]
    samples = list(representative_samples(preprocessing, images))
    emit(event="progress", message=f"calibrating on {len(samples)} views", fraction=0.0)
    ranges = calibrate_ranges(model, request["rules"], {key: [{input_name: s} for s in samples]})
    write_atomically(Path(request["output"]), pickle.dumps(ranges))
    return {"calibrated": True}


def _snr_db(truth: np.ndarray, made: np.ndarray) -> float:
    """Mean over rows of each row's SNR in dB (capped at 200 dB; non-finite output: -200)."""
    values = []
    for t, m in zip(truth, made, strict=True):
        noise = float(np.sum((t - m) ** 2))
        if not np.isfinite(noise):
            values.append(-200.0)
        elif noise == 0:
            values.append(200.0)
        else:
            values.append(min(200.0, 10 * np.log10(max(float(np.sum(t**2)), 1e-30) / noise)))
    return float(np.mean(values))


def _scan(request: dict[str, Any]) -> dict[str, Any]:
    model = Path(request["float"]).read_bytes()
    inputs = np.load(request["inputs"], mmap_mode="r")
    reference = np.load(request["reference"])
    labels = np.load(request["labels"]) if request.get("labels") else None
    ranges = pickle.loads(Path(request["ranges"]).read_bytes()) if request.get("ranges") else None
    truth_top1 = reference.argmax(axis=1)
    records = []
    for done, target in enumerate(request["targets"]):
        emit(event="progress", message=f"quantizing {target['name']} alone", fraction=done)
        qt = quantizer.Quantizer(model, [*request["rules"], only(target["regex"])])
        made = bytes(qt.quantize(ranges if qt.need_calibration else None).quantized_model)
        outputs = model_outputs(made, inputs)
        top1 = outputs.argmax(axis=1)
        record = {
            "name": target["name"],
            "output_snr_db": _snr_db(reference, outputs),
            "agreement": float(np.mean(top1 == truth_top1)),
            "size_bytes": len(made),
        }
        if labels is not None:
            record["correct"] = int(np.sum(top1 == labels))
        records.append(record)
    return {"records": records}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    return _calibrate(request) if request["job"] == "calibrate" else _scan(request)


if __name__ == "__main__":
    sys.exit(serve(handle))
