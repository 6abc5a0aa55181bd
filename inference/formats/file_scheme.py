"""A quantized ``.tflite`` made elsewhere, read back as an ai-edge-quantizer recipe.

To keep ops of someone else's file in float, the app rebuilds the file from
the float model with the same scheme and ``no_quantize`` rules for those ops.
The scheme is read op by op from the file itself:

- integer outputs: static quantization; the activations' bits and symmetry
  from the output tensor, and their *ranges* from its scale and zero point, so
  the rebuilt file gets the very same activation scales without calibrating;
- integer weights read directly: dynamic range; through a ``DEQUANTIZE`` op:
  weight-only; float16 weights through a ``DEQUANTIZE``: float16 casting;
- the weights' bits (int8, int4, int2), symmetry (all zero points 0) and
  granularity (one scale per channel or per tensor);
- anything else stays float.

The most common op config becomes the ``.*`` rule; the others are rules for
their op's output tensor. What cannot be said in a recipe (an integer type the
quantizer has no config for) is listed with the reason. Whether the rebuilt
file really matches is checked by building it and comparing the two
(:func:`inference.analysis.layer_report`'s caller does; see the Layers page).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from inference.formats.op_models import Graph, op_name
from inference.formats.recipes import NO_QUANTIZE, Recipe, parse_recipe, tensor_regex

__all__ = ["FileScheme", "file_scheme"]

_INT_BITS = {tfl.TensorType.INT8: 8, tfl.TensorType.INT16: 16, tfl.TensorType.INT4: 4,
             tfl.TensorType.INT2: 2}  # fmt: skip
_WEIGHT_TYPES = {tfl.TensorType.FLOAT32, tfl.TensorType.FLOAT16, *_INT_BITS}
_TYPE_NAMES = {v: k for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}
_QUANTIZE = "min_max_uniform_quantize"
_ACTIVATION_ONLY_WEIGHTS = {
    "num_bits": 8,
    "symmetric": True,
    "granularity": "CHANNELWISE",
    "dtype": "INT",
}
"""The weight config of a static op without weights (ADD, MEAN): unused, but the rule needs one."""


@dataclass(frozen=True)
class FileScheme:
    """A file's quantization as a recipe, with the ranges its integer activations use."""

    recipe: Recipe
    unexpressed: tuple[tuple[str, str], ...]
    """(tensor, why) for parts of the file that no recipe rule can say."""

    @property
    def ranges(self) -> dict[str, list[float]]:
        return json.loads(self.recipe.ranges) if self.recipe.ranges else {}


def _quantized(tensor: tfl.TensorT) -> tuple[np.ndarray, np.ndarray] | None:
    q = tensor.quantization
    if tensor.type not in _INT_BITS or q is None or q.scale is None or not len(q.scale):
        return None
    return np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.int64)


def _tensor_config(tensor: tfl.TensorT, *, granular: bool) -> dict[str, Any]:
    scales, zeros = _quantized(tensor)  # type: ignore[misc]
    return {
        "num_bits": _INT_BITS[tensor.type],
        "symmetric": bool(np.all(zeros == 0)),
        "granularity": "CHANNELWISE" if granular and len(scales) > 1 else "TENSORWISE",
        "dtype": "INT",
    }


def _range(tensor: tfl.TensorT, symmetric: bool) -> list[float]:
    """The [min, max] from which the quantizer computes this tensor's scale and zero point."""
    scales, zeros = _quantized(tensor)  # type: ignore[misc]
    scale, zero = float(scales[0]), int(zeros[0])
    high = 2 ** (_INT_BITS[tensor.type] - 1) - 1
    if symmetric:  # the quantizer's scale is max(|min|, |max|) / high
        return [-high * scale, high * scale]
    return [(-high - 1 - zero) * scale, (high - zero) * scale]


def _activations_symmetric(graph: Graph) -> bool:
    """Whether the file quantizes activations symmetrically: every zero point is 0.

    Decided for the whole file: an asymmetric tensor may have zero point 0 too.
    """
    for index, tensor in enumerate(graph.graph.tensors):
        found = None if graph.constant(index) else _quantized(tensor)
        if found is not None and tensor.type == tfl.TensorType.INT8 and np.any(found[1] != 0):
            return False
    return True


def file_scheme(candidate: bytes, *, name: str) -> FileScheme:
    """The recipe (and activation ranges) that rebuild ``candidate`` from its float model."""
    graph = Graph(candidate)
    tensors = graph.graph.tensors
    configs: list[tuple[str, str, dict[str, Any] | None]] = []  # (tensor, algorithm, op_config)
    ranges: dict[str, list[float]] = {}
    unexpressed: list[tuple[str, str]] = []
    symmetric = _activations_symmetric(graph)
    for op in graph.graph.operators:
        kind = op_name(graph.tree, op)
        if not graph.computes(op) or kind in {"QUANTIZE", "DEQUANTIZE"}:
            continue
        output = tensors[int(op.outputs[0])]
        weight_index = int(op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] >= 0 else -1
        weight, through_dequantize = None, False
        if weight_index >= 0 and graph.constant(weight_index):
            weight = tensors[weight_index]
        elif weight_index in graph.from_constants:
            weight, through_dequantize = tensors[graph.source(weight_index)], True
        if weight is not None and weight.type not in _WEIGHT_TYPES:
            weight = None  # an axis, a shape or a bias: not weights a recipe quantizes
        config: dict[str, Any] = {"skip_checks": False, "min_weight_elements": 0}
        static = _quantized(output) is not None
        name_out = graph.name(int(op.outputs[0]))
        if static:
            config["activation_tensor_config"] = {
                **_tensor_config(output, granular=False),
                "symmetric": symmetric or output.type == tfl.TensorType.INT16,
            }
            for index in [*op.inputs, *op.outputs]:
                if index >= 0 and not graph.constant(int(index)):
                    found = tensors[int(index)]
                    if _quantized(found) is not None and found.type in (
                        tfl.TensorType.INT8,
                        tfl.TensorType.INT16,
                    ):
                        fixed = _range(found, symmetric or found.type == tfl.TensorType.INT16)
                        ranges.setdefault(graph.name(int(index)), fixed)
                        source = graph.source(int(index))
                        if tensors[source].type == tfl.TensorType.FLOAT32:
                            # the float tensor a QUANTIZE op made this one from (the input)
                            ranges.setdefault(graph.name(source), fixed)
        if weight is not None and weight.type == tfl.TensorType.FLOAT16 and through_dequantize:
            config.update(
                weight_tensor_config={"num_bits": 16, "symmetric": True,
                                      "granularity": "TENSORWISE", "dtype": "FLOAT"},
                compute_precision="FLOAT", explicit_dequantize=True,
            )  # fmt: skip
            configs.append((name_out, "float_casting", config))
            continue
        if weight is not None and _quantized(weight) is not None:
            config["weight_tensor_config"] = _tensor_config(weight, granular=True)
        elif weight is not None and weight.type in _INT_BITS:
            unexpressed.append(
                (name_out, f"integer weights ({_TYPE_NAMES[weight.type]}) without a scale")
            )
        if not static and "weight_tensor_config" not in config:
            configs.append((name_out, NO_QUANTIZE, None))
            continue
        if static and "weight_tensor_config" not in config:
            config["weight_tensor_config"] = dict(_ACTIVATION_ONLY_WEIGHTS)
        config["compute_precision"] = "FLOAT" if through_dequantize else "INTEGER"
        config["explicit_dequantize"] = through_dequantize
        configs.append((name_out, _QUANTIZE, config))
    return FileScheme(_recipe(configs, name, ranges), tuple(unexpressed))


def _recipe(
    configs: list[tuple[str, str, dict[str, Any] | None]], name: str, ranges: dict
) -> Recipe:
    """The most common config as the ``.*`` rule, then one rule per op that differs."""
    keyed = [(t, json.dumps([a, c], sort_keys=True)) for t, a, c in configs]
    common = Counter(key for _, key in keyed).most_common(1)[0][0] if keyed else None
    rules = []
    if common is not None:
        algorithm, config = json.loads(common)
        rules.append(_rule(".*", algorithm, config))
    rules += [_rule(tensor_regex(t), *json.loads(key)) for t, key in keyed if key != common]
    recipe = parse_recipe(json.dumps(rules), name=name)
    return recipe.with_ranges(ranges) if ranges else recipe


def _rule(regex: str, algorithm: str, config: dict[str, Any] | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"regex": regex, "operation": "*", "algorithm_key": algorithm}
    if config is not None:
        rule["op_config"] = config
    return rule
