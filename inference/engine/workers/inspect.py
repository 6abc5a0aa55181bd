"""The model-check child process: ``python -m inference.engine.workers.inspect < {"path": FILE}``.

Opens a user's model file within the limits :func:`inference.registry.user_models.inspect_model`
sets, and answers with its facts in :mod:`inference.core.child_process`'s protocol; for a
``.tflite``, also the labels and input scaling its TFLite metadata declares.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from inference.core.child_process import serve
from inference.formats.tflite_file import inspect_tflite
from inference.formats.tflite_metadata import read_metadata
from inference.models.builders import describe_keras_file


def describe(request: dict[str, Any]) -> dict[str, Any]:
    path = Path(request["path"])
    if path.suffix.lower() == ".tflite":
        facts = inspect_tflite(path)
        found = read_metadata(path.read_bytes())
        return {
            "input_shape": list(facts.input_shape),
            "classes": facts.classes,
            "outputs": facts.outputs,
            "variant": facts.variant.value,
            "tensor_bytes": facts.tensor_bytes,
            "metadata": None
            if found is None
            else {"labels": list(found.labels), "normalize": found.normalize, "name": found.name},
        }
    return describe_keras_file(path)


if __name__ == "__main__":
    sys.exit(serve(describe))
