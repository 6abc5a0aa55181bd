"""The converter child process: ``python -m inference.convert_worker < request.json``.

Builds the Keras model once, exports it as a SavedModel (the Keras 3 path:
``model.export`` then ``TFLiteConverter.from_saved_model``), converts each
requested variant, and writes each file under a temporary name before renaming
it into the cache. Progress and errors go to stdout as JSON lines; TensorFlow's
own chatter goes to stderr, which the parent keeps in a log file.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inference.errors import InferenceError
from inference.specs import ModelSpec, Variant


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


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


def convert(spec: ModelSpec, outputs: dict[Variant, Path], calibration: list[Path]) -> None:
    from inference.keras_models import build_keras_model, import_tensorflow

    tf = import_tensorflow()
    steps = len(outputs) + 1
    emit(message=f"building {spec.title} in Keras", fraction=0.02)
    model = build_keras_model(spec)
    with tempfile.TemporaryDirectory(prefix="quantlens-export-") as tmp:
        saved_model = Path(tmp) / "saved_model"
        emit(message="exporting a SavedModel", fraction=0.5 / steps)
        model.export(str(saved_model), format="tf_saved_model", verbose=False)
        samples: list[Any] = []
        for done, (variant, path) in enumerate(outputs.items(), start=1):
            if variant is Variant.INT8 and not samples:
                from inference.calibration import representative_samples

                samples = list(representative_samples(spec.preprocessing, calibration))
                emit(message=f"calibrating int8 on {len(samples)} samples", fraction=done / steps)
            emit(message=f"converting {variant.value}", fraction=done / steps)
            start = time.perf_counter()
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
            configure(converter, variant, tf, samples)
            write_atomically(path, converter.convert())
            emit(
                message=f"{variant.value} done in {time.perf_counter() - start:.1f} s",
                fraction=(done + 1) / steps,
                variant=variant.value,
                bytes=path.stat().st_size,
            )


def main() -> int:
    from inference.convert import spec_from_json

    request = json.loads(sys.stdin.read())
    spec = spec_from_json(request["spec"])
    outputs = {Variant(v): Path(p) for v, p in request["outputs"].items()}
    calibration = [Path(p) for p in request["calibration"]]
    try:
        convert(spec, outputs, calibration)
    except InferenceError as exc:
        emit(event="error", message=f"{type(exc).__name__}: {exc}")
        return 1
    except Exception as exc:  # the parent shows one line; the log keeps the traceback
        import traceback

        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        emit(event="error", message=f"ConversionError: {spec.name}: {type(exc).__name__} {first}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
