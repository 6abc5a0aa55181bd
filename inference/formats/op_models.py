"""Each op of a ``.tflite`` cut out as a model of its own, to run on inputs of our choosing.

The layer-wise error of a quantized op (what TFLite's Quantization Debugger
reports) is the op against its float original *on the same inputs*: the
reference's activations, quantized with the candidate's own input scale. Run
the whole candidate instead and every op sees its upstream's error too. So
each op is cut out of the candidate, with its weights and the ops that only
prepare those weights (a ``DEQUANTIZE`` of 4-bit or float16 weights), into a
one-op model whose inputs are the op's activation inputs.

No library cuts ops out of a ``.tflite`` (ai-edge-quantizer's validator runs
whole models; TensorFlow's debugger needs the converter and TensorFlow), so
the flatbuffer is rebuilt with LiteRT's own schema classes, as
:mod:`inference.formats.browser_file` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from inference.formats.tflite_file import pack_model, unpack_model

__all__ = ["Graph", "OpModel", "TailModel", "op_models", "op_name", "tail_models"]

_CONVERSIONS = {"QUANTIZE", "DEQUANTIZE"}
"""Ops that only change how an activation is stored."""

_BUILTIN_NAMES = {
    value: name for name, value in vars(tfl.BuiltinOperator).items() if not name.startswith("_")
}


@dataclass(frozen=True)
class OpModel:
    """One op alone: feed it ``inputs`` (tensor names of the whole model), read ``output``."""

    position: int
    """The op's index in the whole model's operator list (execution order)."""
    op: str
    inputs: tuple[str, ...]
    """The op's activation inputs, in the one-op model's input order."""
    sources: tuple[str, ...]
    """Each input's name before any QUANTIZE or DEQUANTIZE ops the quantizer put in front of
    it: the name the float model knows it by (the input's own name where there are none)."""
    output: str
    """The op's first output tensor's name."""
    model: bytes


def op_name(tree: tfl.ModelT, op: tfl.OperatorT) -> str:
    code = tree.operatorCodes[op.opcodeIndex]
    return _BUILTIN_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")


def _name(tensor: tfl.TensorT) -> str:
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


class Graph:
    """The main graph of a model, with which tensors are constants or made from constants."""

    def __init__(self, model: bytes) -> None:
        self.tree = unpack_model(model)
        self.graph = self.tree.subgraphs[0]
        self.producer = {
            int(out): position
            for position, op in enumerate(self.graph.operators)
            for out in op.outputs
        }
        self.from_constants: set[int] = set()  # tensors computed from constants alone
        for op in self.graph.operators:
            ins = [int(i) for i in op.inputs if i >= 0]
            if ins and all(self.constant(i) or i in self.from_constants for i in ins):
                self.from_constants.update(int(o) for o in op.outputs)

    def constant(self, index: int) -> bool:
        buffer = self.graph.tensors[index].buffer
        data = self.tree.buffers[buffer].data if 0 < buffer < len(self.tree.buffers) else None
        return data is not None and len(data) > 0

    def computes(self, op: tfl.OperatorT) -> bool:
        """Whether ``op`` works on activations (not only preparing weights)."""
        return bool(len(op.outputs)) and int(op.outputs[0]) not in self.from_constants

    def name(self, index: int) -> str:
        return _name(self.graph.tensors[index])

    def source(self, index: int) -> int:
        """The tensor before any QUANTIZE/DEQUANTIZE ops in front of ``index``."""
        while index in self.producer:
            making = self.graph.operators[self.producer[index]]
            if op_name(self.tree, making) not in _CONVERSIONS or not len(making.inputs):
                break
            index = int(making.inputs[0])
        return index

    def with_weights(self, ops: list[tfl.OperatorT]) -> list[tfl.OperatorT]:
        """``ops`` with the weight-preparing ops they need in front, in execution order."""
        needed: set[int] = set()
        pending = [int(i) for op in ops for i in op.inputs if i in self.from_constants]
        while pending:
            position = self.producer[pending.pop()]
            if position not in needed:
                needed.add(position)
                making = self.graph.operators[position]
                pending += [int(i) for i in making.inputs if i in self.from_constants]
        return [self.graph.operators[p] for p in sorted(needed)] + ops

    def activation_inputs(self, ops: list[tfl.OperatorT]) -> list[int]:
        """Tensors ``ops`` read that are neither constants nor made by ``ops`` themselves."""
        made = {int(o) for op in ops for o in op.outputs}
        inputs: list[int] = []
        for op in ops:
            for i in op.inputs:
                index = int(i)
                if index < 0 or index in made or self.constant(index):
                    continue
                if index not in self.from_constants and index not in inputs:
                    inputs.append(index)
        return inputs

    def cut(self, ops: list[tfl.OperatorT], outputs: list[int]) -> tuple[list[int], bytes]:
        ops = self.with_weights(ops)
        inputs = self.activation_inputs(ops)
        return inputs, _cut(self.tree, ops, inputs, outputs)


def op_models(model: bytes) -> Iterator[OpModel]:
    """Every op of ``model``'s main graph that computes on activations, as a one-op model.

    Ops whose inputs are all constants (weight preparation) are not yielded on
    their own; they travel with the ops that use them.
    """
    graph = Graph(model)
    for position, op in enumerate(graph.graph.operators):
        if not graph.computes(op):
            continue
        inputs, cut = graph.cut([op], [int(o) for o in op.outputs])
        yield OpModel(
            position=position,
            op=op_name(graph.tree, op),
            inputs=tuple(graph.name(i) for i in inputs),
            sources=tuple(graph.name(graph.source(i)) for i in inputs),
            output=graph.name(int(op.outputs[0])),
            model=cut,
        )


@dataclass(frozen=True)
class TailModel:
    """The rest of a model after one tensor: every op that runs after the op making it."""

    after: str
    """The tensor the tail starts from (the op's first output)."""
    inputs: tuple[str, ...]
    """What the tail reads: ``after``, and earlier tensors it still needs (skip connections)."""
    model: bytes | None
    """``None`` where ``after`` is itself the model's output."""


def tail_models(model: bytes, only: set[str] | None = None) -> Iterator[TailModel]:
    """For each op that computes on activations, the model from its output to the end.

    Fed the float model's activations with one tensor changed, a tail shows what
    that change does to the model's output (the op's own error, carried on).
    ``only``: the ops (by first output tensor) to make tails for.
    """
    graph = Graph(model)
    operators = graph.graph.operators
    outputs = [int(o) for o in graph.graph.outputs]
    for position, op in enumerate(operators):
        if not graph.computes(op):
            continue
        after = int(op.outputs[0])
        if only is not None and graph.name(after) not in only:
            continue
        rest = [o for o in operators[position + 1 :] if graph.computes(o)]
        if after in outputs or not rest:
            yield TailModel(graph.name(after), (graph.name(after),), None)
            continue
        inputs, cut = graph.cut(rest, outputs)
        yield TailModel(graph.name(after), tuple(graph.name(i) for i in inputs), cut)


def _cut(
    tree: tfl.ModelT, ops: list[tfl.OperatorT], inputs: list[int], outputs: list[int]
) -> bytes:
    """A model of ``ops`` alone: their tensors and buffers renumbered, no signature or metadata."""
    graph = tree.subgraphs[0]
    used: dict[int, int] = {}
    for op in ops:
        for index in [
            *op.inputs,
            *op.outputs,
            *(op.intermediates if op.intermediates is not None else []),
        ]:
            if index >= 0 and int(index) not in used:
                used[int(index)] = len(used)
    buffers = [tfl.BufferT()]  # buffer 0: empty, as activations point at it
    tensors = []
    for old in used:
        source = graph.tensors[old]
        tensor = _copy(source)
        data = tree.buffers[source.buffer].data if source.buffer else None
        if data is not None and len(data):
            buffers.append(tree.buffers[source.buffer])
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
        tensors.append(tensor)

    def renumber(indices: object) -> np.ndarray:
        return np.array([used[int(i)] if i >= 0 else -1 for i in indices], dtype=np.int32)

    cut_ops = []
    for op in ops:
        copy = tfl.OperatorT()
        for attribute, value in vars(op).items():
            setattr(copy, attribute, value)
        copy.inputs, copy.outputs = renumber(op.inputs), renumber(op.outputs)
        if op.intermediates is not None:
            copy.intermediates = renumber(op.intermediates)
        cut_ops.append(copy)
    sub = tfl.SubGraphT()
    sub.tensors, sub.operators = tensors, cut_ops
    sub.inputs, sub.outputs = renumber(inputs), renumber(outputs)
    sub.name = graph.name
    cut = tfl.ModelT()
    cut.version, cut.description = tree.version, tree.description
    cut.operatorCodes, cut.subgraphs, cut.buffers = tree.operatorCodes, [sub], buffers
    return pack_model(cut)


def _copy(source: tfl.TensorT) -> tfl.TensorT:
    tensor = tfl.TensorT()
    for attribute, value in vars(source).items():
        setattr(tensor, attribute, value)
    # One example at a time: a dynamic batch would need a resize before every call.
    for attribute in ("shape", "shapeSignature"):
        dims = getattr(tensor, attribute)
        if dims is not None and len(dims):
            setattr(tensor, attribute, np.where(np.asarray(dims) == -1, 1, dims).astype(np.int32))
    return tensor
