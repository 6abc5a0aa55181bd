"""Where quantization breaks: a tensor-by-tensor comparison of two ``.tflite`` files of one graph.

:func:`compare_layers` runs a reference model (usually the float file) and a
candidate (a quantized variant, or any file made from the same graph by
another tool) on the same inputs and reports, for every tensor an op
produces, in execution order:

- SNR in dB, cosine similarity and mean squared error, from ai-edge-quantizer's
  ``model_validator.compare_model`` (which matches tensors by name and
  dequantizes the candidate's integer tensors); its SNR is a power ratio,
  turned into dB here, and each image's figures are averaged over the images;
- the *clipped* fraction, which the validator lacks: the share of the
  reference's values that fall outside the range the candidate's quantization
  can represent, ``[(qmin - zero_point) * scale, (qmax - zero_point) * scale]``
  (per channel where the tensor has several scales). It shows where the
  calibration set did not cover these images; it is ``None`` for tensors the
  candidate keeps in float.

The reference's op list (LiteRT, without the XNNPACK delegate, all tensors
kept) gives each tensor's producing op and position; TensorFlow is not used.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from inference.analysis.own_errors import (
    CARRIED_OPS,
    carry,
    own_error_ops,
    quantization,
    snr_db,
)
from inference.core.errors import InputError
from inference.formats.recipes import Recipe, tensor_regex
from inference.formats.tflite_file import check_identifier, signature_input

__all__ = [
    "AnswerChange",
    "FloatSelection",
    "LayerReport",
    "TensorError",
    "answer_changes",
    "compare_layers",
    "model_explorer_data",
    "short_name",
    "snr_db",
]

CLEAN_SNR_DB = 60.0
"""An input above this SNR counts as exact when measuring the SNR an op loses."""


@dataclass(frozen=True)
class TensorError:
    """How far one tensor of the candidate is from the reference, averaged over the images."""

    index: int
    """Position of the producing op in execution order."""
    tensor: str
    op: str
    shape: tuple[int, ...]
    snr_db: float
    cosine: float
    mse: float
    clipped: float | None
    """Share of reference values outside the candidate's quantized range (None: float tensor)."""
    loss_db: float = 0.0
    """Its inputs' lowest SNR minus its own (0 if none lost): a difference of dB, which is not
    how errors combine (noise powers add); kept for comparison, :attr:`own_snr_db` ranks."""
    own_snr_db: float | None = None
    """The op's own error: the candidate's op fed the reference's inputs (quantized with the
    candidate's own input scale) against the reference's output. Low where damage is made,
    whatever arrives from upstream. ``None``: the op could not be cut out or fed."""
    own_output_snr_db: float | None = None
    """The model's output SNR when only this op's own error is added to the reference: the
    reference's tensor replaced by what the candidate's op made of the reference's inputs,
    carried through the rest of the reference model. It weighs the op's own error by how
    much the network downstream amplifies or damps it."""
    damage_rank: int | None = None
    """1 = the op that makes the most damage (lowest :attr:`own_output_snr_db`)."""

    @property
    def damage_db(self) -> float | None:
        """What damage is ranked by: the own error at the output, else the op's own SNR."""
        return self.own_output_snr_db if self.own_output_snr_db is not None else self.own_snr_db

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tensor": self.tensor,
            "op": self.op,
            "shape": list(self.shape),
            "snr_db": round(self.snr_db, 4),
            "cosine": round(self.cosine, 6),
            "mse": float(f"{self.mse:.6g}"),
            "clipped": None if self.clipped is None else round(self.clipped, 6),
            "loss_db": round(self.loss_db, 4),
            "own_snr_db": None if self.own_snr_db is None else round(self.own_snr_db, 4),
            "own_output_snr_db": None
            if self.own_output_snr_db is None
            else round(self.own_output_snr_db, 4),
            "damage_rank": self.damage_rank,
        }


@dataclass(frozen=True)
class LayerReport:
    """One record per compared tensor, in execution order, plus each image's SNR."""

    records: tuple[TensorError, ...]
    images: int
    per_image_snr_db: np.ndarray = field(repr=False, compare=False)
    """``(images, tensors)``: each image's SNR in dB, columns in ``records`` order."""

    def first_below(self, threshold_db: float) -> TensorError | None:
        """The first tensor (in execution order) whose SNR falls below ``threshold_db``."""
        return next((r for r in self.records if r.snr_db < threshold_db), None)

    def damage_starts(self, threshold_db: float) -> TensorError | None:
        """The first op whose own error alone takes the output below ``threshold_db``.

        In execution order, by :attr:`TensorError.own_output_snr_db`. Only ops
        carried to the output are read (those with the worst own SNR), so
        one threshold compares one quantity; an op that only passes on what it got
        is never where damage starts.
        """
        return next(
            (
                r
                for r in self.records
                if r.own_output_snr_db is not None and r.own_output_snr_db < threshold_db
            ),
            None,
        )

    def worst(self, n: int = 10) -> list[TensorError]:
        """The ``n`` tensors with the lowest SNR."""
        return sorted(self.records, key=lambda r: r.snr_db)[:n]

    def most_damaging(self, n: int = 10) -> list[TensorError]:
        """The ``n`` ops that make the most damage themselves (by :attr:`TensorError.damage_rank`).

        Ops whose own error could not be measured come last, by SNR lost.
        """
        ranked = sorted(
            self.records,
            key=lambda r: (r.damage_rank is None, r.damage_rank or 0, -r.loss_db, r.snr_db),
        )
        return ranked[:n]

    def worst_for_image(self, image: int, n: int = 5) -> list[tuple[TensorError, float]]:
        """The ``n`` tensors with the lowest SNR on one image, with that SNR."""
        order = np.argsort(self.per_image_snr_db[image], kind="stable")[:n]
        return [(self.records[i], float(self.per_image_snr_db[image, i])) for i in order]

    def as_rows(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.records]


def short_name(tensor: str) -> str:
    """A fused tensor's first name (TFLite joins the names of fused ops with ';')."""
    return tensor.split(";", 1)[0]


def _interpreter(path: Path) -> Interpreter:
    check_identifier(path)
    try:
        with warnings.catch_warnings():
            # Keeping every tensor is the point here; LiteRT warns that it costs memory.
            warnings.simplefilter("ignore", UserWarning)
            interpreter = Interpreter(
                model_path=str(path),
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                experimental_preserve_all_tensors=True,
            )
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{path.name}: LiteRT cannot load this model ({exc})") from None
    return interpreter


def _quantized_range(detail: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(low, high, axis) of the values an integer tensor can represent; None for floats."""
    found = quantization(detail)
    if found is None:
        return None
    scales, zero_points, axis = found
    info = np.iinfo(np.dtype(detail["dtype"]))
    return (info.min - zero_points) * scales, (info.max - zero_points) * scales, axis


def _clipped(values: np.ndarray, quantized: tuple[np.ndarray, np.ndarray, int]) -> float:
    low, high, axis = quantized
    if low.size > 1 and values.ndim > axis and values.shape[axis] == low.size:
        shape = [1] * values.ndim
        shape[axis] = low.size
        low, high = low.reshape(shape), high.reshape(shape)
    outside = (values < low) | (values > high)
    return float(outside.mean()) if values.size else 0.0


def compare_layers(reference: Path, candidate: Path, inputs: Sequence[np.ndarray]) -> LayerReport:
    """Compare every op output tensor of ``candidate`` with ``reference`` on ``inputs``.

    Args:
        reference: The float ``.tflite`` (or any file taken as the truth).
        candidate: A file of the same graph: tensors are matched by name.
        inputs: Preprocessed ``(1, H, W, C)`` float32 images.

    Raises:
        InputError: A file cannot be loaded, has no signature, or no tensor matched.
    """
    # The quantizer package takes 0.7 s to import; only a comparison needs it, not the CLI.
    from ai_edge_quantizer import model_validator  # noqa: PLC0415
    from ai_edge_quantizer.utils import validation_utils  # noqa: PLC0415

    metric = validation_utils.ValidationErrorMetric
    wanted = [metric.SNR, metric.COSINE_SIMILARITY, metric.MSE]
    if not inputs:
        raise InputError("expected at least one image to compare the models on")
    ref = _interpreter(reference)
    cand = _interpreter(candidate)
    key, input_name = signature_input(ref, reference)
    ops = [op for op in ref._get_ops_details() if op["op_name"] != "DELEGATE"]
    ref_details = {int(t["index"]): t for t in ref.get_tensor_details()}
    cand_by_name = {t["name"]: t for t in cand.get_tensor_details()}
    produced: list[tuple[int, str, dict[str, Any]]] = []
    op_inputs: dict[int, list[int]] = {}
    for position, op in enumerate(ops):
        for out in op["outputs"]:
            detail = ref_details.get(int(out))
            if detail is not None and detail["name"] in cand_by_name and np.all(detail["shape"]):
                produced.append((position, op["op_name"], detail))
                op_inputs[int(out)] = [int(i) for i in op["inputs"] if int(i) >= 0]
    if not produced:
        raise InputError(
            f"{candidate.name}: no tensor name matches {reference.name}; "
            "expected two files of the same graph"
        )

    ref_bytes, cand_bytes = reference.read_bytes(), candidate.read_bytes()
    names = [detail["name"] for _, _, detail in produced]
    ranges = {name: _quantized_range(cand_by_name[name]) for name in names}
    snr = np.zeros((len(inputs), len(names)))
    cosine = np.zeros_like(snr)
    mse = np.zeros_like(snr)
    clipped = np.zeros_like(snr)
    runner = ref.get_signature_runner(key)
    graph_inputs = ref.get_input_details()
    input_snr: dict[int, list[float]] = {}
    ref_index = {detail["name"]: int(index) for index, detail in ref_details.items()}
    own_ops = own_error_ops(cand_bytes, names, ref_index)
    own = np.full((len(inputs), len(names)), np.nan)
    for row, image in enumerate(inputs):
        batch = np.asarray(image, np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the same memory warning
            result = model_validator.compare_model(
                ref_bytes, cand_bytes, {key: [{input_name: batch}]}, wanted, num_threads=1
            )
        tensors = result.get_all_tensor_results()
        for graph_input in graph_inputs:
            measured = tensors.get(graph_input["name"], {}).get("snr")
            if measured is not None:
                input_snr.setdefault(int(graph_input["index"]), []).append(snr_db(float(measured)))
        runner(**{input_name: batch})
        for column, name in enumerate(names):
            metrics = tensors.get(name, {})
            snr[row, column] = snr_db(float(metrics.get("snr", 0.0)))
            cosine[row, column] = float(metrics.get("cosine_similarity", 0.0))
            mse[row, column] = float(metrics.get("mse", 0.0))
            quantized = ranges[name]
            if quantized is not None:
                values = ref.get_tensor(int(produced[column][2]["index"]))
                clipped[row, column] = _clipped(np.asarray(values, np.float64), quantized)
            if column in own_ops:
                own[row, column] = own_ops[column].run(ref)[0]
    mean_snr = snr.mean(axis=0)
    measured = ~np.isnan(own).any(axis=0)
    mean_own = np.where(measured, np.nan_to_num(own).mean(axis=0), np.nan)
    by_own = sorted(np.flatnonzero(measured), key=lambda c: (mean_own[c], c))
    chosen = {int(c): names[c] for c in by_own[:CARRIED_OPS]}
    carried = carry(ref_bytes, ref, runner, input_name, inputs, own_ops, chosen, ref_index)
    mean_carried = np.full(len(names), np.nan)
    for column, values in carried.items():
        mean_carried[column] = float(np.mean(values))
    reached = ~np.isnan(mean_carried)
    # Damage ranks by what the op's own error does to the output; the ops not carried on
    # (their own error is smaller than the CARRIED_OPS worst) follow, by their own SNR.
    order = sorted(
        np.flatnonzero(measured),
        key=lambda c: (not reached[c], mean_carried[c] if reached[c] else mean_own[c], c),
    )
    rank_of = {int(column): rank for rank, column in enumerate(order, start=1)}
    column_of = {int(detail["index"]): column for column, (_, _, detail) in enumerate(produced)}

    activation_snr = {i: float(np.mean(v)) for i, v in input_snr.items()}
    activation_snr.update({i: float(mean_snr[c]) for i, c in column_of.items()})

    def loss(column: int, detail: dict[str, Any]) -> float:
        # Upstream = the op's activation inputs (the image, or earlier ops' outputs), not its
        # weights: error from quantized weights is damage made here. Above CLEAN_SNR_DB an
        # input counts as exact, so a first layer's loss is not measured from 200 dB.
        inputs = op_inputs[int(detail["index"])]
        upstream = [activation_snr[i] for i in inputs if i in activation_snr]
        clean = min(min(upstream, default=CLEAN_SNR_DB), CLEAN_SNR_DB)
        return max(0.0, clean - float(mean_snr[column]))

    records = tuple(
        TensorError(
            index=position,
            tensor=detail["name"],
            op=op_name,
            shape=tuple(int(d) for d in detail["shape"]),
            snr_db=float(mean_snr[column]),
            cosine=float(cosine[:, column].mean()),
            mse=float(mse[:, column].mean()),
            clipped=None if ranges[detail["name"]] is None else float(clipped[:, column].mean()),
            loss_db=loss(column, detail),
            own_snr_db=float(mean_own[column]) if measured[column] else None,
            own_output_snr_db=float(mean_carried[column]) if reached[column] else None,
            damage_rank=rank_of.get(column),
        )
        for column, (position, op_name, detail) in enumerate(produced)
    )
    return LayerReport(records=records, images=len(inputs), per_image_snr_db=snr)


def model_explorer_data(report: LayerReport, thresholds_db: Sequence[float] = (10, 20, 30)) -> dict:
    """SNR per tensor as node data for Google's Model Explorer (overlay it on the graph).

    The same shape as ai-edge-quantizer's ``create_json_for_model_explorer``
    (``results`` keyed by tensor name, ``thresholds`` with colours), built from
    this report's image-averaged dB values, which that function cannot take.
    """
    colours = ["rgb(200, 0, 0)", "rgb(230, 140, 0)", "rgb(200, 200, 0)", "rgb(0, 160, 0)"]
    return {
        "results": {r.tensor: {"value": round(r.snr_db, 3)} for r in report.records},
        "thresholds": [
            {"value": value, "bgColor": colours[min(i, len(colours) - 1)]}
            for i, value in enumerate(sorted(thresholds_db))
        ],
    }


@dataclass(frozen=True)
class AnswerChange:
    """One image's answers on both sides."""

    reference: np.ndarray
    candidate: np.ndarray

    @property
    def flipped(self) -> bool:
        return int(self.reference.argmax()) != int(self.candidate.argmax())

    @property
    def largest_change(self) -> float:
        return float(np.abs(self.candidate - self.reference).max())


def answer_changes(
    reference: Any, candidate: Any, inputs: Sequence[np.ndarray]
) -> list[AnswerChange]:
    """Both runners' probabilities on each input (``Runner.predict``), paired."""
    return [
        AnswerChange(reference.predict(batch)[0], candidate.predict(batch)[0]) for batch in inputs
    ]


@dataclass(frozen=True)
class FloatSelection:
    """Which ops to keep in float, as the Layers page and the CLI pick them.

    By tensor-name regex (``--keep-float``), by exact tensor name (picked from
    a report), by op type (``--keep-float-op``), and the ``worst`` N of a layer
    report (``--keep-worst``): the ops that *lose* the most SNR, where damage is
    made. Ranking by lowest SNR instead picks the network's last layers, which
    mostly inherit error: on EfficientNet-Lite0 w4, keeping 8 or 16 tensors in
    float ranked by SNR left top-1 agreement with fp32 on 14 photos at 21 % and
    29 %; ranked by SNR lost, 50 % and 71 % (with smaller files).
    """

    regexes: tuple[str, ...] = ()
    tensors: tuple[str, ...] = ()
    operations: tuple[str, ...] = ()
    worst: int = 0

    def __bool__(self) -> bool:
        return bool(self.regexes or self.tensors or self.operations or self.worst)

    def apply(self, recipe: Recipe, report: LayerReport | None = None) -> Recipe:
        """``recipe`` with ``no_quantize`` rules for the selection.

        Raises:
            InputError: ``worst`` is set without a report to rank tensors by.
        """
        names = list(self.tensors)
        if self.worst:
            if report is None:
                raise InputError("keeping the N worst tensors in float needs a layer report")
            names += [record.tensor for record in report.most_damaging(self.worst)]
        regexes = (*self.regexes, *(tensor_regex(name) for name in dict.fromkeys(names)))
        return recipe.keeping_float(regexes, self.operations)
