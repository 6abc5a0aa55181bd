"""Each op's own error: the candidate's op fed the reference's activations, and where it leads.

The layer-wise error of a quantized op, as TFLite's Quantization Debugger
defines it: the op cut out of the candidate (:mod:`inference.formats.op_models`)
and fed the reference's inputs, quantized with the candidate's own input scale,
against the reference's output. Then, for the ops with the worst own error,
that output is carried through the rest of the *reference* model
(:func:`inference.formats.op_models.tail_models`): the model's output SNR with
only this op's own error in it. Noise powers add and the network downstream
amplifies or damps them, so this is what ranks the damage an op makes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from inference.formats.op_models import OpModel, TailModel, op_models, tail_models

__all__ = [
    "CARRIED_OPS",
    "MAX_SNR_DB",
    "carry",
    "own_error_ops",
    "quantization",
    "snr_db",
]

MAX_SNR_DB = 200.0
"""Identical tensors have infinite SNR; reports cap it here so tables and charts stay finite."""
TAILS_AT_ONCE = 4
"""Tails built and held together (each holds the float weights after its op)."""
CARRIED_OPS = 16
"""Ops, by lowest own SNR, whose own error is carried through the rest of the reference."""


def snr_db(power_ratio: float) -> float:
    """A signal-to-noise power ratio in decibels, capped at :data:`MAX_SNR_DB`."""
    if power_ratio <= 0:
        return 0.0 if power_ratio == 0 else -MAX_SNR_DB
    return min(10.0 * math.log10(power_ratio), MAX_SNR_DB)


class _OwnErrorOp:
    """One candidate op cut out (:mod:`inference.formats.op_models`), fed reference activations."""

    def __init__(self, cut: OpModel, ref_inputs: list[int], ref_output: int) -> None:
        self.interpreter = Interpreter(
            model_content=cut.model,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        self.interpreter.allocate_tensors()
        self.feeds = list(zip(self.interpreter.get_input_details(), ref_inputs, strict=True))
        self.output = self.interpreter.get_output_details()[0]
        self.ref_output = ref_output

    def run(self, ref: Interpreter) -> tuple[float, np.ndarray]:
        """The op's own SNR on the activations ``ref`` holds now (one image), and its output."""
        for detail, index in self.feeds:
            value = np.asarray(ref.get_tensor(index), np.float64).reshape(detail["shape"])
            self.interpreter.set_tensor(detail["index"], _to_tensor(value, detail))
        self.interpreter.invoke()
        made = _to_float(self.interpreter.get_tensor(self.output["index"]), self.output)
        truth = np.asarray(ref.get_tensor(self.ref_output), np.float64).reshape(made.shape)
        return _snr(truth, made), made


class _Tail:
    """The reference model after one tensor: carries a changed tensor on to the output."""

    def __init__(self, tail: TailModel, ref_index: dict[str, int]) -> None:
        self.interpreter = None
        if tail.model is not None:
            self.interpreter = Interpreter(model_content=tail.model)
            self.interpreter.allocate_tensors()
            details = self.interpreter.get_input_details()
            self.feeds = [
                (d, ref_index[name]) for d, name in zip(details, tail.inputs, strict=True)
            ]
            self.changed = ref_index[tail.after]
            self.output = self.interpreter.get_output_details()[0]

    def output_snr_db(self, ref: Interpreter, changed: np.ndarray, truth: np.ndarray) -> float:
        """The output's SNR when the tensor holds ``changed`` and the rest what ``ref`` holds."""
        if self.interpreter is None:
            return _snr(truth, changed.reshape(truth.shape))
        for detail, index in self.feeds:
            value = changed if index == self.changed else ref.get_tensor(index)
            value = np.asarray(value, np.float64).reshape(detail["shape"])
            self.interpreter.set_tensor(detail["index"], _to_tensor(value, detail))
        self.interpreter.invoke()
        made = _to_float(self.interpreter.get_tensor(self.output["index"]), self.output)
        return _snr(truth, made.reshape(truth.shape))


def _snr(truth: np.ndarray, made: np.ndarray) -> float:
    noise = float(np.sum((truth - made) ** 2))
    if not np.isfinite(noise):
        return -MAX_SNR_DB  # NaN or inf: nothing of the signal is left
    signal = float(np.sum(truth**2))
    return snr_db(signal / noise) if noise > 0 else MAX_SNR_DB


def quantization(detail: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int] | None:
    params = detail["quantization_parameters"]
    scales = np.asarray(params["scales"], np.float64)
    if not np.issubdtype(np.dtype(detail["dtype"]), np.integer) or scales.size == 0:
        return None
    return scales, np.asarray(params["zero_points"], np.float64), params["quantized_dimension"]


def _per_axis(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def _to_tensor(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A float value as the tensor ``detail`` holds it: quantized with its own scale, or cast."""
    dtype = np.dtype(detail["dtype"])
    found = quantization(detail)
    if found is None:
        return value.astype(dtype)
    scales, zero_points, axis = found
    scale = _per_axis(scales, axis, value.ndim)
    zero = _per_axis(zero_points, axis, value.ndim)
    info = np.iinfo(dtype)
    return np.clip(np.round(value / scale) + zero, info.min, info.max).astype(dtype)


def _to_float(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    found = quantization(detail)
    if found is None:
        return np.asarray(value, np.float64)
    scales, zero_points, axis = found
    return (value.astype(np.float64) - _per_axis(zero_points, axis, value.ndim)) * _per_axis(
        scales, axis, value.ndim
    )


def carry(
    ref_bytes: bytes,
    ref: Interpreter,
    runner: Any,
    input_name: str,
    inputs: Sequence[np.ndarray],
    own_ops: dict[int, _OwnErrorOp],
    chosen: dict[int, str],
    ref_index: dict[str, int],
) -> dict[int, list[float]]:
    """Each chosen op's own error carried through the rest of the reference: output SNR per image.

    Tails hold the float weights of everything after their op (Lite0's 16 worst:
    0.3 GB together; one per op: 0.9 GB), so they are built, run on every image
    and dropped :data:`TAILS_AT_ONCE` at a time; the reference runs again for
    each group, which costs less than holding them all.
    """
    output = int(ref.get_output_details()[0]["index"])
    carried: dict[int, list[float]] = {}
    columns = {name: column for column, name in chosen.items()}
    made_tails = (
        (columns[t.after], t)
        for t in tail_models(ref_bytes, only=set(chosen.values()))
        if t.after in columns and all(n in ref_index for n in t.inputs)
    )
    while group := [
        (column, _Tail(made, ref_index))
        for column, made in itertools.islice(made_tails, TAILS_AT_ONCE)
    ]:
        for column, _ in group:
            carried[column] = []
        for image in inputs:
            runner(**{input_name: np.asarray(image, np.float32)})
            truth = np.asarray(ref.get_tensor(output), np.float64)
            for column, tail in group:
                made = own_ops[column].run(ref)[1]
                carried[column].append(tail.output_snr_db(ref, made, truth))
        del group  # their weights go before the next group's arrive
    return carried


def own_error_ops(
    candidate: bytes, names: Sequence[str], ref_index: dict[str, int]
) -> dict[int, _OwnErrorOp]:
    """For each compared tensor (by column), its candidate op ready to be fed, where possible."""
    columns = {name: column for column, name in enumerate(names)}
    ops: dict[int, _OwnErrorOp] = {}
    for cut in op_models(candidate):
        column = columns.get(cut.output)
        sources = [
            next((n for n in (name, source) if n in ref_index), None)
            for name, source in zip(cut.inputs, cut.sources, strict=True)
        ]
        if column is None or None in sources:
            continue
        try:
            ops[column] = _OwnErrorOp(cut, [ref_index[n] for n in sources], ref_index[cut.output])
        except (RuntimeError, ValueError):
            continue  # an op LiteRT cannot run alone keeps no own error
    return ops
