"""The model checker child process: ``python -m inference.inspect_worker MODEL.keras``.

Prints one JSON line: the model's input shape, output count and parameter
count, or ``{"error": ...}``. Run by ``keras_models.inspect_keras_file`` under a
memory and time limit, so a crafted file cannot exhaust the server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from inference.errors import InferenceError


def main() -> int:
    from inference.keras_models import describe_keras_file

    try:
        answer: dict[str, object] = describe_keras_file(Path(sys.argv[1]))
    except InferenceError as exc:
        answer = {"error": str(exc)}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
