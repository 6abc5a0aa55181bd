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

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

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
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float32))
    if kind == "probabilities":
        clipped = np.clip(scores, 0.0, 1.0)
        return clipped / np.maximum(clipped.sum(axis=-1, keepdims=True), 1e-12)
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


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
        dtype = self.input_dtype
        if not np.issubdtype(dtype, np.integer):
            return batch.astype(dtype, copy=False)
        scale, zero_point = self.input_quantization
        info = np.iinfo(dtype)
        if scale == 0.0:  # integer input without quantization: raw pixel values
            return np.clip(np.rint(batch), info.min, info.max).astype(dtype)
        quantized = np.rint(batch / scale) + zero_point
        return np.clip(quantized, info.min, info.max).astype(dtype)

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        """Integer output back to float: ``(q - zero_point) * scale``."""
        if not np.issubdtype(raw.dtype, np.integer):
            return raw.astype(np.float32, copy=False)
        scale, zero_point = self.output_quantization
        if scale == 0.0:
            return raw.astype(np.float32)
        return (raw.astype(np.float32) - zero_point) * scale

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        rows = []
        with self._lock:
            # The files have a fixed batch of one; a loop keeps them unresized.
            for row in batch:
                self._interpreter.set_tensor(self._input["index"], self.quantize_input(row[None]))
                self._interpreter.invoke()
                rows.append(
                    self.dequantize_output(self._interpreter.get_tensor(self._output["index"]))
                )
        return to_probabilities(np.concatenate(rows, axis=0), self.spec.outputs)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def close(self) -> None:
        with self._lock:
            self._interpreter = None
