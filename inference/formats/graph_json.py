"""A ``.tflite`` file as Google Model Explorer's graph JSON, and node data that colours it.

Model Explorer's own TFLite adapter (``ai-edge-model-explorer-adapter``, a
native library) parses the flatbuffer; it is imported only when a graph is
asked for, since loading it costs ~0.5 GB of address space and it exists for
Linux and macOS only. Without it, :func:`graph_collections` raises
:class:`GraphUnavailable` with one line, and everything else works.

Node data follows Model Explorer's format: per graph id, ``results`` keyed by
output tensor name, and a colour ``gradient`` over the values' range.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inference.core.errors import InputError

__all__ = ["DAMAGE_GRADIENT", "GraphUnavailable", "adapter_problem", "graph_collections",
           "node_data"]  # fmt: skip

ADAPTER = "ai_edge_model_explorer_adapter"
DAMAGE_GRADIENT = (
    {"stop": 0.0, "bgColor": "#d7191c"},
    {"stop": 0.5, "bgColor": "#fdae61"},
    {"stop": 0.75, "bgColor": "#ffffbf"},
    {"stop": 1.0, "bgColor": "#1a9641"},
)
"""Low values (little SNR: damage) red, high green; Model Explorer spreads it over the range."""


class GraphUnavailable(InputError):
    """Model Explorer's adapter cannot be loaded on this machine."""


def adapter_problem() -> str | None:
    """Why the graph cannot be drawn here, in one line, or None when it can."""
    if importlib.util.find_spec(ADAPTER) is None:
        return (
            "The graph needs Model Explorer's adapter (pip install "
            "ai-edge-model-explorer-adapter), which is not installed on this platform."
        )
    return None


def graph_collections(path: Path) -> dict[str, Any]:
    """``{"graphCollections": [...]}`` for ``path``, as Model Explorer's server answers it.

    Raises:
        GraphUnavailable: The adapter is missing or cannot be loaded.
        InputError: The file cannot be parsed.
    """
    problem = adapter_problem()
    if problem:
        raise GraphUnavailable(problem)
    try:
        adapter = importlib.import_module(ADAPTER)
    except (ImportError, OSError) as exc:  # a wheel for another platform, a missing .so
        raise GraphUnavailable(f"Model Explorer's adapter cannot be loaded here ({exc})") from None
    try:
        text = adapter.ConvertFlatbufferDirectlyToJson(adapter.VisualizeConfig(), str(path))
    except Exception as exc:  # the native parser's own error
        raise InputError(f"{path.name}: Model Explorer cannot read it ({exc})") from None
    collections = json.loads(text)
    return {
        "graphCollections": [
            {"label": item.get("label") or path.stem, "graphs": item["subgraphs"]}
            for item in collections
        ]
    }


def output_tensors(graphs: Mapping[str, Any]) -> dict[str, str]:
    """Each op node's first output tensor name -> its node id, in the first graph."""
    found = {}
    for collection in graphs["graphCollections"]:
        for graph in collection["graphs"][:1]:
            for node in graph["nodes"]:
                for output in node.get("outputsMetadata", []):
                    for attr in output.get("attrs", []):
                        if attr["key"] == "tensor_name":
                            found.setdefault(attr["value"], node["id"])
    return found


def node_data(values: Mapping[str, float], graph_id: str = "main") -> dict[str, Any]:
    """Node data for Model Explorer: ``values`` keyed by output tensor name, coloured by range."""
    return {
        graph_id: {
            "results": {tensor: {"value": round(float(v), 3)} for tensor, v in values.items()},
            "gradient": list(DAMAGE_GRADIENT),
        }
    }
