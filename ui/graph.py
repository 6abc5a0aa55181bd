"""The Layers page's graph: the candidate in Model Explorer, coloured by each op's own error.

Model Explorer's web app is served by this app (``api/graph.py``); this module
puts the candidate's graph and its node data in the store, and draws the
frame with a small bridge (``components/model_graph``): a row picked in the
worst-ops table selects that node, and a node picked on the graph comes back
as the component's value, to be shown and kept in float.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import streamlit as st
import streamlit.components.v1 as components

from inference.analysis.layer_report import LayerReport, TensorError, short_name
from inference.formats.graph_json import (
    adapter_problem,
    graph_collections,
    node_data,
    side_by_side,
)
from inference.registry.graphs import GRAPHS
from ui.resources import show_error

__all__ = [
    "GRAPH_HEIGHT",
    "adapter_problem",
    "graph_section",
    "graph_url",
    "legend_line",
    "picked_line",
    "record_of",
    "show_graph",
]

GRAPH_HEIGHT = 620
COMPONENT_DIR = Path(__file__).resolve().parents[1] / "components" / "model_graph"
_graph = components.declare_component("model_graph", path=str(COMPONENT_DIR))


def own_snr_values(report: LayerReport) -> dict[str, float]:
    """Each op's own SNR (dB) by output tensor, for the graph's colours."""
    return {r.tensor: r.own_snr_db for r in report.records if r.own_snr_db is not None}


@st.cache_data(show_spinner=False, max_entries=16)
def _graph_numbers(
    files: tuple[tuple[str, int, float], tuple[str, int, float]],
    names: tuple[str, str],
    values_json: str,
) -> tuple[int, int]:
    (candidate, *_), (reference, *_) = files
    graphs = side_by_side(
        graph_collections(Path(reference)), graph_collections(Path(candidate)), names
    )
    data = node_data(json.loads(values_json), graph_id=names[0])
    return GRAPHS.put(json.dumps(graphs)), GRAPHS.put(json.dumps(data))


def _pane(graph_id: str, selected: bool) -> dict:
    return {"deepestExpandedGroupNodeIds": [], "selectedNodeId": "", "selectedGraphId": graph_id,
            "selectedCollectionLabel": "", "widthFraction": 0.5, "selected": selected}  # fmt: skip


def graph_url(
    candidate: Path,
    reference: Path,
    names: tuple[str, str],
    report: LayerReport,
    *,
    beside: bool = False,
) -> str:
    """The frame's address: both graphs (the candidate shown) and its own-SNR node data.

    With ``beside``, Model Explorer opens split: the candidate (coloured) on the left,
    the reference on the right, an op picked on one found on the other.

    Raises:
        GraphUnavailable: Model Explorer's adapter cannot be loaded here.
    """
    files = tuple((str(p), p.stat().st_size, p.stat().st_mtime) for p in (candidate, reference))
    names = (f"{names[0]} (quantized)", f"{names[1]} (reference)")
    values = json.dumps(own_snr_values(report), sort_keys=True)
    graph, data = _graph_numbers(files, names, values)
    if GRAPHS.get(graph) is None:  # evicted from the store since it was cached: put it again
        _graph_numbers.clear()
        graph, data = _graph_numbers(files, names, values)
    encoded = {
        "models": [{"url": f"graphs://{names[0].split()[0].replace('/', '_')}/{graph}"}],
        "nodeData": [f"node_data://own SNR (dB)/{data}"],
        "nodeDataTargets": [""],  # "": the first (only) model
        # Split view: an op picked on one graph is found on the other (same node ids).
        "sync": {"mode": "match_node_id"},
    }
    if beside:
        encoded["uiState"] = {"paneStates": [_pane(names[0], True), _pane(names[1], False)]}
    return f"/model-explorer/?data={quote(json.dumps(encoded))}"


def show_graph(url: str, select: str | None, key: str) -> dict | None:
    """The graph; returns the node last picked on it (``{"nodeId", "tensors", "seq"}``)."""
    return _graph(url=url, select=select, height=GRAPH_HEIGHT, key=key, default=None)


def record_of(report: LayerReport, tensors: Sequence[str]) -> TensorError | None:
    """The report's record for a node picked on the graph (by its output tensors)."""
    by_tensor = {r.tensor: r for r in report.records}
    return next((by_tensor[t] for t in tensors if t in by_tensor), None)


def picked_line(record: TensorError) -> str:
    """What a node picked on the graph shows: its own error, what it inherits, clipping, shape."""
    own = "n/a" if record.own_snr_db is None else f"{record.own_snr_db:.1f} dB"
    clipped = "float" if record.clipped is None else f"{record.clipped:.1%}"
    return (
        f"**#{record.index} {record.op}** `{short_name(record.tensor)}`: own SNR {own}, "
        f"SNR in the model (inherited) {record.snr_db:.1f} dB, clipped {clipped}, "
        f"shape {'x'.join(map(str, record.shape))}"
    )


def legend_line(report: LayerReport) -> str:
    """The colour scale: Model Explorer spreads its gradient over the values' range."""
    values = list(own_snr_values(report).values())
    if not values:
        return "No op has an own error to colour (a float candidate)."
    return (
        f"Colour: each op's own SNR, the op alone fed the reference's inputs: red "
        f"{min(values):.1f} dB (the most error made) through orange and yellow to green "
        f"{max(values):.1f} dB. Expand a layer to see its ops; pick a node to see its figures."
    )


def _keep_in_float(tensor: str) -> None:
    """A node picked on the graph joins the tensors kept in float (before that widget draws)."""
    kept = list(st.session_state.get("layers_keep_tensors", []))
    if tensor not in kept:
        st.session_state["layers_keep_tensors"] = [*kept, tensor]


def graph_section(
    report: LayerReport,
    candidate: Path,
    reference: Path,
    names: tuple[str, str],
    *,
    wanted: str | None,
) -> None:
    """The Layers page's graph: a toggle, the frame, and the node picked on it.

    ``wanted`` is the output tensor the page's table or chart picked: selected on the graph.
    """
    st.markdown("**The graph** (Google's Model Explorer, served by this app)")
    problem = adapter_problem()
    if problem:
        st.info(problem, icon=":material/account_tree:")
        return
    if not st.toggle("Show the graph, coloured by each op's own error", key="layers_graph"):
        return
    beside = st.checkbox(
        f"Beside the reference ({names[1]}), ops matched",
        key="layers_graph_beside",
        help="Model Explorer's split view: an op picked on one graph is found on the other.",
    )
    try:
        url = graph_url(candidate, reference, names, report, beside=beside)
    except Exception as exc:
        show_error(exc, f"drawing the graph of {names[0]}")
        return
    st.caption(legend_line(report))
    shown = show_graph(url, wanted, key="layers_graph_frame")
    record = record_of(report, (shown or {}).get("tensors", []))
    if record is not None:
        pick_cell, keep_cell = st.columns([4, 1])
        pick_cell.markdown("Picked on the graph: " + picked_line(record))
        keep_cell.button(
            "Keep it in float",
            key="layers_graph_keep",
            on_click=_keep_in_float,
            args=(record.tensor,),
            help="Adds it to the tensors kept in float below; then Build and measure.",
        )
