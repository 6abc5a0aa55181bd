"""Checks and facts about a ``.tflite`` file, read with LiteRT (no TensorFlow).

One identifier check serves the cache, the runners and uploads; a file is
verified once per version (size, mtime), because pages ask on every rerun.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl
from ai_edge_litert.interpreter import Interpreter

from inference.core.errors import InputError
from inference.core.specs import OutputKind, Variant

__all__ = ["TFLITE_IDENTIFIER", "TFLiteFacts", "check_identifier", "inspect_tflite", "is_valid"]

TFLITE_IDENTIFIER = b"TFL3"
"""The flatbuffer file identifier, at bytes 4-8 of every TFLite model."""


def has_identifier(path: Path) -> bool:
    with open(path, "rb") as file:
        head = file.read(8)
    return len(head) == 8 and head[4:8] == TFLITE_IDENTIFIER


def check_identifier(path: Path) -> None:
    """Raises ``InputError`` unless ``path`` starts like a TFLite flatbuffer."""
    if not has_identifier(path):
        raise InputError(f"{path.name}: not a TFLite flatbuffer (missing the 'TFL3' identifier)")


def open_interpreter(path: Path, threads: int = 1) -> Interpreter:
    """A LiteRT interpreter with tensors allocated.

    Raises:
        InputError: Not a TFLite file, or LiteRT cannot load it.
    """
    check_identifier(path)
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{path.name}: LiteRT cannot load this model ({exc})") from None
    return interpreter


def is_valid(path: Path) -> bool:
    """A complete TFLite file: the identifier, and a flatbuffer LiteRT's verifier accepts."""
    try:
        status = path.stat()
    except OSError:
        return False
    return _verified(str(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _verified(path: str, size: int, mtime_ns: int) -> bool:
    try:
        check_identifier(Path(path))
        Interpreter(model_path=path)  # verifies offsets; truncation fails here
    except (InputError, ValueError, RuntimeError, OSError):
        return False
    return True


@dataclass(frozen=True)
class TFLiteFacts:
    """What the app needs to know about an image classifier in a ``.tflite`` file."""

    input_shape: tuple[int, int, int]
    """(height, width, channels)."""
    classes: int
    variant: Variant
    """Which of the app's variants the file is, read from its tensor types."""
    outputs: OutputKind
    """``probabilities`` when the graph's last op is a softmax."""
    tensor_bytes: int
    """Total bytes of all tensors (weights and activations)."""


def inspect_tflite(path: Path) -> TFLiteFacts:
    """Read a ``.tflite`` file's input, classes, variant, output kind and tensor bytes.

    The variant is read from the tensor types: int16 activations mean
    int16x8; int8 activations (or input), static int8; float16 weights, fp16;
    integer weights dequantized by DEQUANTIZE ops, weight-only (reported as
    w4, the app's weight-only variant); other integer weights, dynamic range;
    otherwise fp32. The output kind comes from the op that produces the
    output (a quantized model may end with a quantize op after its softmax, so
    those are skipped).

    Raises:
        InputError: The file is not a loadable image classifier.
    """
    interpreter = open_interpreter(path)
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(f"{path.name}: expected one image input and one output")
    shape = tuple(int(d) for d in inputs[0]["shape"])
    out_shape = tuple(int(d) for d in outputs[0]["shape"])
    if len(shape) != 4 or len(out_shape) != 2:
        raise InputError(
            f"{path.name}: expected input (1, height, width, channels) and output (1, classes); "
            f"received {shape} and {out_shape}"
        )
    tensors = interpreter.get_tensor_details()
    dtypes = {np.dtype(t["dtype"]) for t in tensors}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    by_index = {int(t["index"]): np.dtype(t["dtype"]) for t in tensors}
    activations = {by_index[int(o)] for op in ops for o in op["outputs"] if int(o) in by_index}
    activations.add(np.dtype(inputs[0]["dtype"]))
    if np.dtype(np.int16) in activations:
        variant = Variant.INT16X8
    elif activations & {np.dtype(np.int8), np.dtype(np.uint8)}:
        variant = Variant.INT8
    elif np.dtype(np.float16) in dtypes:
        variant = Variant.FP16
    elif np.dtype(np.int8) in dtypes:
        dequantized = any(op["op_name"] == "DEQUANTIZE" for op in ops)
        variant = Variant.W4 if dequantized else Variant.DYNAMIC
    else:
        variant = Variant.FP32
    size = sum(math.prod(map(int, t["shape"])) * np.dtype(t["dtype"]).itemsize for t in tensors)
    return TFLiteFacts(
        input_shape=(shape[1], shape[2], shape[3]),
        classes=out_shape[1],
        variant=variant,
        outputs=output_kind(interpreter, int(outputs[0]["index"])),
        tensor_bytes=int(size),
    )


def signature_input(interpreter: Interpreter, path: Path) -> tuple[str, str]:
    """The model's first signature key and its one input's name (the quantizer feeds by name).

    Raises:
        InputError: No signature, or a signature with several inputs.
    """
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise InputError(f"{path.name}: the model has no signature to run it through by name")
    key, signature = next(iter(signatures.items()))
    if len(signature["inputs"]) != 1:
        raise InputError(f"{path.name}: expected one input in signature {key!r}")
    return key, signature["inputs"][0]


def op_types(path: Path) -> list[str]:
    """The TFLite op types a model uses, sorted (CONV_2D, SOFTMAX, ...)."""
    interpreter = open_interpreter(path)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()} - {"DELEGATE"})


_PASS_THROUGH_OPS = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "CAST"}


def output_kind(interpreter: Interpreter, output_index: int) -> OutputKind:
    """``probabilities`` if the op behind the output (past quantize/reshape ops) is SOFTMAX."""
    # The public API has no op list; _get_ops_details is what LiteRT's own tools use.
    # After allocation, XNNPACK appears as an extra DELEGATE node over the original ops.
    producers = {
        int(o): op
        for op in interpreter._get_ops_details()
        if op["op_name"] != "DELEGATE"
        for o in op["outputs"]
    }
    tensor = output_index
    for _ in range(8):
        op = producers.get(tensor)
        if op is None:
            return "logits"
        if op["op_name"] == "SOFTMAX":
            return "probabilities"
        if op["op_name"] not in _PASS_THROUGH_OPS or not len(op["inputs"]):
            return "logits"
        tensor = int(op["inputs"][0])
    return "logits"


def unpack_model(model: bytes) -> tfl.ModelT:
    """A ``.tflite`` as LiteRT's editable object tree, every constant inside it.

    ai-edge-quantizer stores some constants after the flatbuffer, by offset;
    :func:`pack_model` writes a new flatbuffer, so they are read back in here.
    Anything else appended (a metadata zip) is left behind.
    """
    tree = tfl.ModelT.InitFromPackedBuf(model, 0)
    for buffer in tree.buffers:
        if buffer.offset and buffer.offset > 1:
            end = buffer.offset + buffer.size
            buffer.data = np.frombuffer(model[buffer.offset : end], dtype=np.uint8)
            buffer.offset = buffer.size = 0
    return tree


def pack_model(tree: tfl.ModelT, size_hint: int = 0) -> bytes:
    """The ``.tflite`` flatbuffer of an object tree from :func:`unpack_model`."""
    builder = flatbuffers.Builder(size_hint + 4096)
    builder.Finish(tree.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def model_outputs(model: bytes, inputs: np.ndarray) -> np.ndarray:
    """The model's float outputs for each input row, one call per row."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    feed, read = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for row in inputs:
        value = row[None].astype(np.float32)
        scale, zero = feed["quantization"]
        if feed["dtype"] != np.float32:  # an integer interface: quantize as the runner does
            info = np.iinfo(feed["dtype"])
            value = np.clip(np.round(value / scale) + zero, info.min, info.max).astype(
                feed["dtype"]
            )
        if tuple(feed["shape"]) != value.shape:
            interpreter.resize_tensor_input(feed["index"], value.shape)
            interpreter.allocate_tensors()
            feed = interpreter.get_input_details()[0]
        interpreter.set_tensor(feed["index"], value)
        interpreter.invoke()
        out = interpreter.get_tensor(read["index"]).astype(np.float64)
        scale, zero = read["quantization"]
        rows.append((out - zero) * scale if read["dtype"] != np.float32 else out)
    return np.concatenate(rows)
