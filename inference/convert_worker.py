"""The float converter child: ``python -m inference.convert_worker < request.json``.

Builds the Keras model and writes its float32 ``.tflite`` with Keras 3's own
exporter, ``model.export(path, format="litert")``. Measured on
EfficientNet-Lite0 against the previous path (``model.export`` to a
SavedModel, then ``TFLiteConverter.from_saved_model``): the same outputs
(largest difference 0.0 on a random input; the files differ by 8 bytes of
metadata), and the same time for the whole stage from a cold start (about
14 s here: TensorFlow's import 4 s, building 1.4 s, export and conversion
the rest), so the simpler call is used. Every other variant is made from
that file by ``inference.quantize_worker``, without TensorFlow. Speaks
:mod:`inference.child`'s protocol; TensorFlow's own chatter goes to stderr,
which the parent keeps in a log file.
"""

from __future__ import annotations

import json
import os
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
    import_tensorflow()
    progress(f"building {spec.title} in Keras", 0.02)
    model = build_keras_model(spec)
    progress("exporting a float32 .tflite", 0.1)
    with tempfile.TemporaryDirectory(prefix="quantlens-export-", dir=output.parent) as tmp:
        exported = Path(tmp) / "model.tflite"
        model.export(str(exported), format="litert", verbose=False)
        os.replace(exported, output)  # same folder: an atomic rename
    seconds = time.perf_counter() - start
    record = {"recipe_name": "fp32", "made_by": "TFLiteConverter", "seconds": round(seconds, 2)}
    write_atomically(output.with_suffix(".json"), json.dumps(record).encode())
    progress(f"fp32 done in {seconds:.1f} s", 0.4)
    return {"bytes": output.stat().st_size, "seconds": seconds}


if __name__ == "__main__":
    sys.exit(serve(convert))
