"""Runners: one interface over a Keras model and a TFLite file.

``Runner.predict`` takes a normalized float32 batch and returns class
probabilities, whatever the variant: quantized input and output tensors are
handled here with the tensor's own scale and zero point, so callers never see
them. TFLite files run on LiteRT (``ai_edge_litert``), which does not import
TensorFlow; only the ``original`` variant does.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inference.errors import InputError
from inference.specs import Category, ModelSpec, Variant

__all__ = [
    "KerasRunner",
    "LiteRTRunner",
    "Runner",
    "default_threads",
    "inspect_tflite",
    "load_runner",
    "load_runners",
    "to_probabilities",
    "top_k",
]

TFLITE_IDENTIFIER = b"TFL3"
PROBABILITY_TOLERANCE = 1e-2


def default_threads() -> int:
    """CPU cores this process may use (LiteRT itself defaults to one thread)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """Return rows of ``scores`` as probabilities.

    Rows that already look like a distribution (values in [0, 1], sum near 1)
    are renormalized, which undoes the rounding of a quantized softmax whose
    1000 outputs no longer sum to exactly 1; anything else is treated as logits
    and goes through a stable softmax.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float32))
    sums = scores.sum(axis=-1, keepdims=True)
    # Decided row by row, so an image's answer never depends on its batch mates.
    is_distribution = (
        np.all(scores >= -PROBABILITY_TOLERANCE, axis=-1, keepdims=True)
        & np.all(scores <= 1 + PROBABILITY_TOLERANCE, axis=-1, keepdims=True)
        & (sums > 0.5)
        & (sums < 1.5)
    )
    clipped = np.clip(scores, 0.0, 1.0)
    renormalized = clipped / np.maximum(clipped.sum(axis=-1, keepdims=True), 1e-12)
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.where(is_distribution, renormalized, exp / exp.sum(axis=-1, keepdims=True))


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
    variant: Variant

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
        from inference.keras_models import import_tensorflow

        tf = import_tensorflow()
        self.spec = spec
        self.variant = Variant.ORIGINAL
        self.model = model
        signature = tf.TensorSpec((None, *spec.preprocessing.input_shape), tf.float32)
        self._call = tf.function(
            lambda x: model(x, training=False), input_signature=[signature], jit_compile=False
        )
        self._size = int(sum(np.prod(w.shape) * w.dtype.itemsize for w in _weights_numpy(model)))

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> KerasRunner:
        from inference.keras_models import build_keras_model

        return cls(spec, build_keras_model(spec))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        outputs = self._call(np.asarray(batch, dtype=np.float32))
        return to_probabilities(np.asarray(outputs))

    @property
    def size_bytes(self) -> int:
        return self._size


def _weights_numpy(model: Any) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def _litert_interpreter(path: Path, threads: int) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=threads)


def _check_tflite_file(path: Path) -> None:
    with open(path, "rb") as file:
        head = file.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise InputError(f"{path.name}: not a TFLite flatbuffer (missing the 'TFL3' identifier)")


class LiteRTRunner(Runner):
    """A ``.tflite`` file on LiteRT, with quantized I/O handled inside.

    A LiteRT interpreter must be used by one thread at a time, so ``predict``
    holds a lock; a runner cached for all sessions is then safe to share.
    """

    def __init__(
        self, spec: ModelSpec, variant: Variant, path: Path, *, threads: int | None = None
    ) -> None:
        _check_tflite_file(path)
        self.spec = spec
        self.variant = variant
        self.path = path
        self.threads = threads or default_threads()
        try:
            self._interpreter = _litert_interpreter(path, self.threads)
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise InputError(f"{path.name}: LiteRT cannot load this model ({exc})") from None
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
        return to_probabilities(np.concatenate(rows, axis=0))

    def invoke_raw(self, quantized: np.ndarray) -> np.ndarray:
        """One bare invoke on an already-typed input (for benchmarking the runtime itself)."""
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], quantized)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"])

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def close(self) -> None:
        with self._lock:
            self._interpreter = None


def inspect_tflite(path: Path) -> tuple[tuple[int, int, int], int, Variant]:
    """Input (height, width, channels), class count, and which variant a ``.tflite`` file is.

    The variant is read from the tensors: integer input means full-integer
    quantization; int8 weights with float input, dynamic range; float16
    weights, fp16; otherwise fp32.

    Raises:
        InputError: The file is not a loadable image classifier.
    """
    _check_tflite_file(path)
    try:
        interpreter = _litert_interpreter(path, 1)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{path.name}: LiteRT cannot load this model ({exc})") from None
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
    dtypes = {np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    if np.issubdtype(np.dtype(inputs[0]["dtype"]), np.integer):
        variant = Variant.INT8
    elif np.dtype(np.int8) in dtypes:
        variant = Variant.DYNAMIC
    elif np.dtype(np.float16) in dtypes:
        variant = Variant.FP16
    else:
        variant = Variant.FP32
    return (shape[1], shape[2], shape[3]), out_shape[1], variant


ProgressCallback = Callable[[str, float], None]


def load_runner(
    spec: ModelSpec,
    variant: Variant | str,
    *,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    calibration: list[Path] | None = None,
    warmup: bool = True,
) -> Runner:
    """Load ``spec`` as ``variant``, converting and caching the TFLite file if needed.

    Args:
        spec: The model.
        variant: A variant the spec offers.
        threads: LiteRT threads (default: every core this process may use).
        progress: Called with (message, fraction done) during conversion.
        calibration: Images for int8 calibration (default: ``assets/calibration``).
        warmup: Run once on zeros before returning, so the first real call is
            not the one that traces (Keras) or plans (LiteRT).

    Raises:
        InputError: The variant is not offered, or a file is unusable.
        ModelUnavailableError: The model's weights cannot be obtained.
        ConversionError: Conversion failed.
    """
    variant = Variant(variant)
    if variant not in spec.variants:
        offered = ", ".join(v.value for v in spec.variants)
        raise InputError(
            f"expected variant to be one of {{{offered}}} for {spec.name}; "
            f"received {variant.value!r}"
        )
    if variant is Variant.ORIGINAL:
        runner: Runner = KerasRunner.from_spec(spec)
    elif spec.is_tflite_file:
        runner = LiteRTRunner(spec, variant, spec.path, threads=threads)
    else:
        from inference.convert import ensure_variants

        path = ensure_variants(spec, [variant], progress=progress, calibration=calibration)[variant]
        runner = LiteRTRunner(spec, variant, path, threads=threads)
    if warmup:
        runner.predict(np.zeros((1, *spec.preprocessing.input_shape), np.float32))
    return runner


def load_runners(
    spec: ModelSpec,
    variants: tuple[Variant, ...] | list[Variant],
    *,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    calibration: list[Path] | None = None,
) -> list[Runner]:
    """Load several variants, converting all missing ones in one converter process."""
    variants = [Variant(v) for v in variants]
    to_convert = [v for v in variants if v.is_tflite and v in spec.variants]
    if to_convert and not spec.is_tflite_file:
        from inference.convert import ensure_variants

        ensure_variants(spec, to_convert, progress=progress, calibration=calibration)
    return [
        load_runner(spec, v, threads=threads, progress=progress, calibration=calibration)
        for v in variants
    ]
