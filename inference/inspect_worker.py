"""The model-check child process: ``python -m inference.inspect_worker < {"path": FILE}``.

Opens a user's model file within the limits :func:`inference.custom.inspect_model`
sets, and answers with its facts in :mod:`inference.child`'s protocol.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from inference.builders import describe_keras_file
from inference.child import serve
from inference.tflite_file import inspect_tflite


def describe(request: dict[str, Any]) -> dict[str, Any]:
    path = Path(request["path"])
    if path.suffix.lower() == ".tflite":
        facts = inspect_tflite(path)
        return {
            "input_shape": list(facts.input_shape),
            "classes": facts.classes,
            "outputs": facts.outputs,
            "variant": facts.variant.value,
            "tensor_bytes": facts.tensor_bytes,
        }
    return describe_keras_file(path)


if __name__ == "__main__":
    sys.exit(serve(describe))
