"""Check a user's model file in a child process: ``python -m inference.inspect_worker FILE``.

A model file names its layers and tensor sizes; a crafted one can declare
billions of weights and exhaust memory while loading. ``inspect_model`` runs
this module as a child with an address-space and time limit, so such a file
costs the server nothing, and refuses models too large to serve before the
server ever loads them. The child prints one JSON line: the input shape,
output count, parameter or tensor bytes, and the TFLite variant, or an error.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from inference.errors import InferenceError, InputError
from inference.zoo import ASSETS_DIR

__all__ = ["MAX_PARAMETERS", "MAX_TENSOR_BYTES", "inspect_model"]

log = logging.getLogger("inference")

MEMORY_LIMIT_BYTES = 8 * 1024**3
"""Address space of the checker; TensorFlow alone reserves about 3 GB of it."""
TIMEOUT_S = 180
MAX_PARAMETERS = 200_000_000
"""Largest Keras model served (800 MB of float32 weights)."""
MAX_TENSOR_BYTES = 1_000_000_000
"""Largest total of a .tflite file's tensors (weights and activations)."""


def _describe(path: Path) -> dict[str, object]:
    if path.suffix.lower() == ".tflite":
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        from inference.runners import inspect_tflite

        shape, outputs, variant = inspect_tflite(path)
        tensors = Interpreter(model_path=str(path)).get_tensor_details()
        size = sum(int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize for t in tensors)
        return {"input_shape": list(shape), "outputs": outputs, "variant": variant.value,
                "tensor_bytes": size}  # fmt: skip
    from inference.keras_models import describe_keras_file

    return describe_keras_file(path)


def _limit_memory() -> None:  # pragma: no cover - runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def inspect_model(path: Path) -> dict[str, object]:
    """Describe a ``.keras``/``.h5``/``.tflite`` file from a child process, within limits.

    Returns:
        ``input_shape`` [h, w, c] and ``outputs``; ``parameters`` for Keras
        files; ``variant`` and ``tensor_bytes`` for TFLite files.

    Raises:
        InputError: The model is unsafe, unreadable, too large, or not an
            image classifier.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ASSETS_DIR.parent), env.get("PYTHONPATH")])
    )
    limits = f"{MEMORY_LIMIT_BYTES // 1024**3} GB of memory and {TIMEOUT_S} s"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "inference.inspect_worker", str(path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=env,
            preexec_fn=_limit_memory if sys.platform.startswith("linux") else None,
        )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"{path.name}: checking this model took more than {limits}; refused"
        ) from None
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        # Killed by the memory limit, or a crash inside a native loader.
        log.warning("model checker failed on %s: %s", path.name, result.stderr[-2000:])
        raise InputError(f"{path.name}: the model could not be loaded within {limits}; refused")
    facts = json.loads(lines[-1])
    if "error" in facts:
        raise InputError(facts["error"])
    if int(facts.get("parameters", 0)) > MAX_PARAMETERS:
        raise InputError(
            f"{path.name}: {int(facts['parameters']) / 1e6:.0f} M parameters; models over "
            f"{MAX_PARAMETERS / 1e6:.0f} M are refused"
        )
    if int(facts.get("tensor_bytes", 0)) > MAX_TENSOR_BYTES:
        raise InputError(
            f"{path.name}: its tensors take {int(facts['tensor_bytes']) / 1e6:.0f} MB; models over "
            f"{MAX_TENSOR_BYTES / 1e6:.0f} MB are refused"
        )
    return facts


def main() -> int:
    try:
        answer = _describe(Path(sys.argv[1]))
    except InferenceError as exc:
        answer = {"error": str(exc)}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
