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

__all__ = [
    "DAMAGE_GRADIENT",
    "GraphUnavailable",
    "adapter_problem",
    "graph_collections",
    "matched_ids",
    "node_data",
    "output_tensors",
    "side_by_side",
    "web_app_dir",
]

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


def web_app_dir() -> Path | None:
    """Model Explorer's built web app inside its installed wheel (the package is not imported)."""
    spec = importlib.util.find_spec("model_explorer")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "web_app"
    return folder if (folder / "index.html").is_file() else None


def adapter_problem() -> str | None:
    """Why the graph cannot be drawn here, in one line, or None when it can."""
    if web_app_dir() is None:
        return "The graph needs Google's Model Explorer (pip install ai-edge-model-explorer)."
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


def side_by_side(
    reference: Mapping[str, Any], candidate: Mapping[str, Any], names: tuple[str, str]
) -> dict[str, Any]:
    """One collection holding the candidate's graph (first: the one shown) and the reference's.

    The graphs are named ``names`` (candidate, reference) and the candidate's ops
    take the reference's node ids (:func:`matched_ids`), so Model Explorer's
    split view with "match node id" sync follows an op from one to the other.
    """
    matched = matched_ids(reference, candidate)["graphCollections"][0]["graphs"][0]
    plain = json.loads(json.dumps(reference["graphCollections"][0]["graphs"][0]))
    matched["id"], plain["id"] = names
    return {"graphCollections": [{"label": "with its reference", "graphs": [matched, plain]}]}


def matched_ids(reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, Any]:
    """``candidate``'s graphs with each op renamed to the reference op of the same output tensor.

    Model Explorer's side-by-side view follows a node to the other pane by id
    ("match node id"); a quantized file's ids are shifted by its QUANTIZE and
    DEQUANTIZE ops, so its ops take the float ops' ids where they compute the
    same tensor, and the rest (quantize, dequantize, constants) an id of their
    own (``q`` + their id, never a float id).
    """
    known = output_tensors(reference)
    graphs = json.loads(json.dumps(candidate))  # a deep copy, as plain JSON
    for collection in graphs["graphCollections"]:
        for graph in collection["graphs"]:
            renamed: dict[str, str] = {}
            for node in graph["nodes"]:
                tensors = [
                    attr["value"]
                    for output in node.get("outputsMetadata", [])
                    for attr in output.get("attrs", [])
                    if attr["key"] == "tensor_name"
                ]
                match = next((known[t] for t in tensors if t in known), None)
                renamed[node["id"]] = match if match is not None else f"q{node['id']}"
            for node in graph["nodes"]:
                node["id"] = renamed[node["id"]]
                for edge in node.get("incomingEdges", []):
                    edge["sourceNodeId"] = renamed.get(edge["sourceNodeId"], edge["sourceNodeId"])
    return graphs
