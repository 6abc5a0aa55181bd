"""The float converter child: ``python -m inference.engine.workers.convert < request.json``.

Builds the Keras model and writes its float32 ``.tflite``: the model's call
is traced once, its variables are folded into constants, and the frozen
function goes to ``TFLiteConverter.from_concrete_functions``.

Why not Keras 3's own ``model.export(path, format="litert")``: it gives the
same file (on EfficientNet-Lite0, every output identical, the same 163
tensors and signature) but first writes a SavedModel of the whole Keras
object graph, which walks ~30 000 trackable children. Measured here from a
cold start: export 10.9 s against freeze 1.4 s + conversion 2.7-3.3 s, so the
whole stage takes ~9 s instead of ~16 s. Models with several inputs, or
whose call cannot be traced this way, still go through ``model.export``.
Every other variant is made from that file by ``inference.engine.workers.quantize``,
without TensorFlow. Speaks :mod:`inference.core.child_process`'s protocol; TensorFlow's
own chatter goes to stderr, which the parent keeps in a log file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inference.core.child_process import emit, serve, write_atomically
from inference.core.specs import ModelSpec
from inference.formats.tflite_metadata import describe_spec, with_metadata
from inference.models.builders import build_keras_model, import_tensorflow


def progress(message: str, fraction: float) -> None:
    emit(event="progress", message=message, fraction=fraction)


def _frozen_tflite(model: Any) -> bytes | None:
    """The float32 flatbuffer of a single-input model, or None when it needs ``model.export``."""
    tf = import_tensorflow()
    # A private module, used for speed (see the module docstring): TFLite's converter itself
    # freezes with it when given no trackable object, but then writes no signature, which
    # ai-edge-quantizer needs.
    from tensorflow.python.framework.convert_to_constants import (  # noqa: PLC0415 - TF is lazy
        convert_variables_to_constants_v2,
    )

    if len(model.inputs) != 1:
        return None
    (keras_input,) = model.inputs
    name = re.sub(r"[^0-9A-Za-z_]", "_", keras_input.name.split(":")[0]) or "input"
    signature = tf.TensorSpec(keras_input.shape, keras_input.dtype, name=name)
    try:
        traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(signature)
        frozen = convert_variables_to_constants_v2(traced)
    except (TypeError, ValueError, tf.errors.OpError):
        return None
    holder = tf.Module()  # the converter saves it with the function: the signature's name
    holder.serving = frozen
    return bytes(tf.lite.TFLiteConverter.from_concrete_functions([frozen], holder).convert())


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
        flatbuffer = _frozen_tflite(model)
        if flatbuffer is None:
            model.export(str(exported), format="litert", verbose=False)
            flatbuffer = exported.read_bytes()
        # Labels and input scaling travel inside the file (MediaPipe reads them).
        exported.write_bytes(with_metadata(flatbuffer, **describe_spec(spec)))
        os.replace(exported, output)  # same folder: an atomic rename
    seconds = time.perf_counter() - start
    record = {"recipe_name": "fp32", "made_by": "TFLiteConverter", "seconds": round(seconds, 2)}
    write_atomically(output.with_suffix(".json"), json.dumps(record).encode())
    progress(f"fp32 done in {seconds:.1f} s", 0.4)
    return {"bytes": output.stat().st_size, "seconds": seconds}


if __name__ == "__main__":
    sys.exit(serve(convert))
