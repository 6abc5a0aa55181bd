"""The float converter child: ``python -m inference.convert_worker < request.json``.

Builds the Keras model and writes its float32 ``.tflite``: Keras 3's
``model.export(dir)`` SavedModel, then ``TFLiteConverter.from_saved_model``.
Every other variant is made from that file by ``inference.quantize_worker``,
without TensorFlow. Speaks :mod:`inference.child`'s protocol; TensorFlow's
own chatter goes to stderr, which the parent keeps in a log file.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inference.builders import build_keras_model, import_tensorflow
from inference.child import emit, serve, write_atomically
from inference.specs import ModelSpec


def progress(message: str, fraction: float) -> None:
    emit(event="progress", message=message, fraction=fraction)


def convert(request: dict[str, Any]) -> dict[str, Any]:
    spec = ModelSpec.from_json(request["spec"])
    output = Path(request["output"])
    start = time.perf_counter()
    tf = import_tensorflow()
    progress(f"building {spec.title} in Keras", 0.02)
    model = build_keras_model(spec)
    with tempfile.TemporaryDirectory(prefix="quantlens-export-") as tmp:
        saved_model = Path(tmp) / "saved_model"
        progress("exporting a SavedModel", 0.1)
        model.export(str(saved_model), format="tf_saved_model", verbose=False)
        progress("converting to a float32 .tflite", 0.25)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        write_atomically(output, converter.convert())
    seconds = time.perf_counter() - start
    record = {"recipe_name": "fp32", "made_by": "TFLiteConverter", "seconds": round(seconds, 2)}
    write_atomically(output.with_suffix(".json"), json.dumps(record).encode())
    progress(f"fp32 done in {seconds:.1f} s", 0.4)
    return {"bytes": output.stat().st_size, "seconds": seconds}


if __name__ == "__main__":
    sys.exit(serve(convert))
