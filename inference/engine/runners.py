"""Runners: one interface over a Keras model and a TFLite file.

``Runner.predict`` takes a normalized float32 batch and returns class
probabilities, whatever the variant: quantized input and output tensors are
handled here with the tensor's own scale and zero point, and logits get a
softmax when the spec declares them, so callers never see either. TFLite
files run on LiteRT (``ai_edge_litert``), which does not import TensorFlow;
only the ``original`` variant does. A runner is built from a model or a file:
loading never converts (see :mod:`inference.registry.loading`).
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from inference.core.errors import InputError
from inference.core.machine import default_threads
from inference.core.specs import AnyVariant, Category, ModelSpec, OutputKind, Variant
from inference.formats.tflite_file import open_interpreter
from inference.models.builders import build_keras_model, import_tensorflow

__all__ = [
    "KerasRunner",
    "LiteRTRunner",
    "Runner",
    "to_probabilities",
    "top_k",
]


def to_probabilities(scores: np.ndarray, kind: OutputKind) -> np.ndarray:
    """Return rows of ``scores`` as probabilities, as the model's declared output ``kind`` says.

    Probabilities are clipped and renormalized, which undoes the rounding of a
    quantized softmax whose 1000 outputs no longer sum to exactly 1; logits go
    through a stable softmax. Each row is computed on its own, so an image's
    answer never depends on its batch mates.
    """
    rows = np.array(np.atleast_2d(scores), dtype=np.float32)  # a copy: normalized in place
    return _normalize_rows(rows, kind)


def _normalize_rows(rows: np.ndarray, kind: OutputKind) -> np.ndarray:
    """:func:`to_probabilities` in place on a float32 array (the runner's own output rows)."""
    if kind == "probabilities":
        np.clip(rows, 0.0, 1.0, out=rows)
        rows /= np.maximum(rows.sum(axis=-1, keepdims=True), 1e-12)
        return rows
    rows -= rows.max(axis=-1, keepdims=True)
    np.exp(rows, out=rows)
    rows /= rows.sum(axis=-1, keepdims=True)
    return rows


def top_k(probabilities: np.ndarray, labels: tuple[str, ...], k: int = 5) -> tuple[Category, ...]:
    """The ``k`` most probable classes, best first (``k`` capped at the class count)."""
    probabilities = np.asarray(probabilities).reshape(-1)
    k = max(1, min(int(k), probabilities.size))
    # argsort on the negated scores is stable, so ties keep index order.
    order = np.argsort(-probabilities, kind="stable")[:k]
    return tuple(Category(int(i), labels[i], float(probabilities[i])) for i in order)


class Runner(ABC):
    """Runs one model variant: ``predict(batch) -> probabilities``. Thread-safe."""

    spec: ModelSpec
    variant: AnyVariant

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Map a ``(N, H, W, C)`` float32 batch, preprocessed for the spec, to ``(N, classes)``."""

    @property
    @abstractmethod
    def size_bytes(self) -> int:
        """Size of the model's weights as stored (file size, or parameter bytes for Keras)."""

    def close(self) -> None:  # noqa: B027 - optional hook; Keras runners hold nothing native
        """Release native resources."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class KerasRunner(Runner):
    """The original Keras model behind a compiled ``tf.function``.

    ``model.predict`` costs tens of milliseconds per call in set-up and eager
    calls are slower still; a traced function with a fixed input signature is
    what the model itself costs.
    """

    def __init__(self, spec: ModelSpec, model: Any) -> None:
        tf = import_tensorflow()
        self.spec = spec
        self.variant = Variant.ORIGINAL
        self.model = model
        signature = tf.TensorSpec((None, *spec.preprocessing.input_shape), tf.float32)
        self._call = tf.function(
            lambda x: model(x, training=False), input_signature=[signature], jit_compile=False
        )
        self._size = int(
            sum(np.prod(w.shape) * w.dtype.itemsize for w in map(np.asarray, model.get_weights()))
        )

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> KerasRunner:
        return cls(spec, build_keras_model(spec))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        outputs = self._call(np.asarray(batch, dtype=np.float32))
        return to_probabilities(np.asarray(outputs), self.spec.outputs)

    @property
    def size_bytes(self) -> int:
        return self._size


class LiteRTRunner(Runner):
    """A ``.tflite`` file on LiteRT, with quantized I/O handled inside.

    A LiteRT interpreter must be used by one thread at a time, so ``predict``
    holds a lock; a runner cached for all sessions is then safe to share.

    ``predict`` adds little to a bare ``set_tensor``/``invoke``/``get_tensor``
    besides the quantization arithmetic itself: each row is quantized in a
    scratch buffer kept for the runner, straight into the input tensor's own
    memory, and outputs are dequantized into the result array, with the
    tensors' parameters worked out once. Right after an invoke has flushed the
    caches, every numpy call and every temporary costs several times its
    usual price: the per-row formula's temporaries made Lite0 int8 1.085x a
    bare loop, this 1.06x (see ``docs/benchmark.md``).
    """

    def __init__(
        self, spec: ModelSpec, variant: AnyVariant, path: Path, *, threads: int | None = None
    ) -> None:
        self.spec = spec
        self.variant = variant
        self.path = path
        self.threads = threads or default_threads()
        self._interpreter: Any = open_interpreter(path, self.threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._lock = threading.Lock()
        expected = tuple(int(d) for d in self._input["shape"][1:])
        if expected != spec.preprocessing.input_shape:
            raise InputError(
                f"{path.name}: input shape {expected} does not match the spec's "
                f"{spec.preprocessing.input_shape}"
            )
        self._row_shape = expected
        self._output_shape = tuple(int(d) for d in self._output["shape"][1:])
        # One row in float32, reused by every call (under the lock).
        self._scratch = np.empty(expected, np.float32)
        self._input_plan = _quantize_plan(self.input_quantization, self.input_dtype, np.float32)
        self._output_plan = _dequantize_plan(self.output_quantization, self.output_dtype)

    @property
    def input_quantization(self) -> tuple[float, int]:
        scale, zero_point = self._input["quantization"]
        return float(scale), int(zero_point)

    @property
    def output_quantization(self) -> tuple[float, int]:
        scale, zero_point = self._output["quantization"]
        return float(scale), int(zero_point)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(self._output["dtype"])

    def quantize_input(self, batch: np.ndarray) -> np.ndarray:
        """Float input as the input tensor's dtype: ``q = round(x / scale) + zero_point``."""
        # Computed in the dtype ``batch / scale`` has: float32 stays float32.
        compute = np.result_type(batch.dtype, 1.0)
        plan = _quantize_plan(self.input_quantization, self.input_dtype, compute)
        if plan is None:
            return batch.astype(self.input_dtype, copy=False)
        out = np.empty(batch.shape, self.input_dtype)
        _quantize_into(batch, plan, out, np.empty(batch.shape, compute))
        return out

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        """Integer output back to float: ``(q - zero_point) * scale``."""
        out = np.empty(raw.shape, np.float32)
        _dequantize_into(raw, _dequantize_plan(self.output_quantization, raw.dtype), out)
        return out

    def invoke_raw(self, tensor: np.ndarray) -> np.ndarray:
        """Set ``tensor`` as the input as it is, invoke, and return the raw output tensor.

        No quantization, no softmax: what LiteRT alone costs on this runner's own
        interpreter, which ``bench`` compares :meth:`predict` with. ``tensor`` must
        have the input tensor's shape and dtype (see :meth:`quantize_input`).
        """
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], tensor)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.shape[1:] != self._row_shape:
            raise InputError(
                f"{self.path.name}: expected a batch of shape (N, "
                f"{', '.join(map(str, self._row_shape))}); received {batch.shape}"
            )
        scores = np.empty((len(batch), *self._output_shape), np.float32)
        input_index, output_index = self._input["index"], self._output["index"]
        input_plan, output_plan, scratch = self._input_plan, self._output_plan, self._scratch
        input_dtype = self._input["dtype"]
        with self._lock:
            interpreter = self._interpreter
            # The files have a fixed batch of one; a loop keeps them unresized.
            for row, out in zip(batch, scores, strict=True):
                if input_plan is None:  # a float input: set_tensor copies it in
                    interpreter.set_tensor(input_index, row[None].astype(input_dtype, copy=False))
                else:
                    tensor = interpreter.tensor(input_index)()  # the input's own memory
                    _quantize_into(row, input_plan, tensor[0], scratch)
                    del tensor  # invoke() refuses to run while a view of its memory lives
                interpreter.invoke()
                _dequantize_into(interpreter.get_tensor(output_index)[0], output_plan, out)
        return _normalize_rows(scores, self.spec.outputs)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def close(self) -> None:
        with self._lock:
            self._interpreter = None


class _QuantizePlan(NamedTuple):
    """How to quantize into one integer tensor, worked out once per runner."""

    factor: float
    """What to multiply by (``multiply``) or divide by; 0: raw integer pixels."""
    multiply: bool
    zero_point: int
    low: int
    high: int


def _quantize_plan(
    quantization: tuple[float, int], dtype: np.dtype, compute: type | np.dtype
) -> _QuantizePlan | None:
    """The plan for an integer tensor computed in ``compute``; None for a float tensor.

    A power-of-two scale (Lite0's is 1/128) is multiplied by its reciprocal:
    that reciprocal is exact, so the product is the quotient's own float,
    and division costs twice as much.
    """
    if not np.issubdtype(dtype, np.integer):
        return None
    scale, zero_point = quantization
    info = np.iinfo(dtype)
    reciprocal = _exact_reciprocal(scale, np.dtype(compute)) if scale else None
    if reciprocal is not None:
        return _QuantizePlan(reciprocal, True, zero_point, int(info.min), int(info.max))
    return _QuantizePlan(scale, False, zero_point, int(info.min), int(info.max))


def _quantize_into(
    values: np.ndarray, plan: _QuantizePlan, out: np.ndarray, scratch: np.ndarray
) -> None:
    """``out = clip(rint(values / scale) + zero_point)``, computed in ``scratch``.

    The formula's own operations, in its order and dtype, done in place: the
    same integers as ``np.clip(np.rint(x / scale) + zp, lo, hi).astype(...)``
    without its five temporaries. A zero scale means integer input without
    quantization: raw pixel values.
    """
    if plan.factor == 0.0:
        np.rint(values, out=scratch)
    else:
        if plan.multiply:
            np.multiply(values, plan.factor, out=scratch)
        else:
            np.divide(values, plan.factor, out=scratch)
        np.rint(scratch, out=scratch)
        np.add(scratch, plan.zero_point, out=scratch)
    np.clip(scratch, plan.low, plan.high, out=out, casting="unsafe")


def _exact_reciprocal(scale: float, dtype: np.dtype) -> float | None:
    """``1 / scale`` when multiplying by it equals dividing by ``scale`` in ``dtype``, else None.

    True for a power of two whose reciprocal is a normal number of ``dtype``:
    both operations then round the same real number.
    """
    info = np.finfo(dtype)
    if math.frexp(scale)[0] != 0.5:
        return None
    reciprocal = 1.0 / scale
    if not (info.tiny <= scale <= info.max and info.tiny <= reciprocal <= info.max):
        return None
    return reciprocal


def _dequantize_plan(quantization: tuple[float, int], dtype: np.dtype) -> tuple[int, float] | None:
    """(zero point, scale) of an integer output; None when values are copied as they are."""
    scale, zero_point = quantization
    if np.issubdtype(dtype, np.integer) and scale != 0.0:
        return zero_point, scale
    return None


def _dequantize_into(raw: np.ndarray, plan: tuple[int, float] | None, out: np.ndarray) -> None:
    """``out = (raw - zero_point) * scale`` in float32; without a plan, a float32 copy."""
    if plan is None:
        np.copyto(out, raw, casting="unsafe")
        return
    zero_point, scale = plan
    np.subtract(raw, zero_point, out=out, dtype=np.float32)
    out *= scale
