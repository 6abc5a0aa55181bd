"""The converter child process: ``python -m inference.convert_worker < request.json``.

Builds the Keras model once, exports it as a SavedModel (the Keras 3 path:
``model.export`` then ``TFLiteConverter.from_saved_model``), converts each
requested variant, and writes each file under a temporary name before renaming
it into the cache. It speaks :mod:`inference.child`'s protocol; TensorFlow's
own chatter goes to stderr, which the parent keeps in a log file.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inference.builders import build_keras_model, import_tensorflow
from inference.calibration import representative_samples
from inference.child import emit, serve
from inference.specs import ModelSpec, Variant


def progress(message: str, fraction: float) -> None:
    emit(event="progress", message=message, fraction=fraction)


def configure(converter: Any, variant: Variant, tf: Any, samples: list[Any]) -> None:
    """Set the converter options that define each variant."""
    if variant is Variant.FP32:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant is Variant.FP16:
        converter.target_spec.supported_types = [tf.float16]
    elif variant is Variant.INT8:
        converter.representative_dataset = lambda: ([s] for s in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def convert(request: dict[str, Any]) -> dict[str, Any]:
    spec = ModelSpec.from_json(request["spec"])
    outputs = {Variant(v): Path(p) for v, p in request["outputs"].items()}
    calibration = [Path(p) for p in request["calibration"]]
    tf = import_tensorflow()
    steps = len(outputs) + 1
    progress(f"building {spec.title} in Keras", 0.02)
    model = build_keras_model(spec)
    written: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="quantlens-export-") as tmp:
        saved_model = Path(tmp) / "saved_model"
        progress("exporting a SavedModel", 0.5 / steps)
        model.export(str(saved_model), format="tf_saved_model", verbose=False)
        samples: list[Any] = []
        for done, (variant, path) in enumerate(outputs.items(), start=1):
            if variant is Variant.INT8 and not samples:
                samples = list(representative_samples(spec.preprocessing, calibration))
                progress(f"calibrating int8 on {len(samples)} samples", done / steps)
            progress(f"converting {variant.value}", done / steps)
            start = time.perf_counter()
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
            configure(converter, variant, tf, samples)
            write_atomically(path, converter.convert())
            written[variant.value] = path.stat().st_size
            seconds = time.perf_counter() - start
            progress(f"{variant.value} done in {seconds:.1f} s", (done + 1) / steps)
    return {"bytes": written}


if __name__ == "__main__":
    sys.exit(serve(convert))
