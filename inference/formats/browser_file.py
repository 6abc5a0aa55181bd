"""A ``.tflite`` file as LiteRT.js (the browser runtime) can run it.

Measured with ``@litertjs/core`` 2.5.3 in Chromium: it refuses a dynamic batch
dimension ("Float32[1,224,224,3] does not match Float32[-1,224,224,3]") and
integer input or output tensors ("Element type INT8 is not supported"; its
tensors are float32, int32 or uint8). So the browser gets a copy with every
``-1`` in the shape signatures set to 1 and, where the interface is integer,
a QUANTIZE op in front of the input and a DEQUANTIZE op after the output: the
same arithmetic the server's runner does in Python around the interpreter
(tested: the same outputs as the original file through LiteRT in Python).
No library edits a TFLite interface this way (``modify_model_interface`` goes
from float to integer only), so the flatbuffer is rewritten with LiteRT's own
schema classes.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from inference.formats.tflite_file import pack_model, unpack_model

__all__ = ["browser_file"]


def _opcode(model: tfl.ModelT, builtin: int) -> int:
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = tfl.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_twin(graph: tfl.SubGraphT, index: int, suffix: str) -> int:
    """A float32 tensor shaped like tensor ``index``, appended; its index."""
    source = graph.tensors[index]
    twin = tfl.TensorT()
    twin.shape = np.array(source.shape, dtype=np.int32)
    if source.shapeSignature is not None:
        twin.shapeSignature = np.array(source.shapeSignature, dtype=np.int32)
    twin.type = tfl.TensorType.FLOAT32
    twin.buffer = 0  # the empty buffer: an activation
    twin.name = (source.name or b"tensor") + suffix.encode()
    graph.tensors.append(twin)
    return len(graph.tensors) - 1


def _op(opcode: int, inputs: list[int], outputs: list[int]) -> tfl.OperatorT:
    op = tfl.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = np.array(inputs, dtype=np.int32)
    op.outputs = np.array(outputs, dtype=np.int32)
    return op


def browser_file(model: bytes) -> bytes:
    """``model`` with batch 1 and a float32 interface (see the module docstring)."""
    tree = unpack_model(model)
    graph = tree.subgraphs[0]
    for tensor in graph.tensors:
        if tensor.shapeSignature is not None and len(tensor.shapeSignature):
            signature = np.asarray(tensor.shapeSignature)
            tensor.shapeSignature = np.where(signature == -1, 1, signature).astype(np.int32)
        if tensor.shape is not None and len(tensor.shape):
            tensor.shape = np.where(np.asarray(tensor.shape) == -1, 1, tensor.shape).astype(
                np.int32
            )
    renamed: dict[int, int] = {}
    inputs, outputs = list(graph.inputs), list(graph.outputs)
    for position, index in enumerate(inputs):
        if graph.tensors[index].type != tfl.TensorType.FLOAT32:
            twin = _float_twin(graph, index, "/float")
            graph.operators.insert(
                0, _op(_opcode(tree, tfl.BuiltinOperator.QUANTIZE), [twin], [index])
            )
            inputs[position] = renamed[index] = twin
    for position, index in enumerate(outputs):
        if graph.tensors[index].type != tfl.TensorType.FLOAT32:
            twin = _float_twin(graph, index, "/float")
            graph.operators.append(
                _op(_opcode(tree, tfl.BuiltinOperator.DEQUANTIZE), [index], [twin])
            )
            outputs[position] = renamed[index] = twin
    graph.inputs = np.array(inputs, dtype=np.int32)
    graph.outputs = np.array(outputs, dtype=np.int32)
    for signature in tree.signatureDefs or []:
        for mapping in [*(signature.inputs or []), *(signature.outputs or [])]:
            mapping.tensorIndex = renamed.get(mapping.tensorIndex, mapping.tensorIndex)
    return pack_model(tree, len(model))
