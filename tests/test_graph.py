"""The Layers page's graph: Model Explorer's graph JSON, node data, and the routes that serve it."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from api.graph import PREFIX, graph_routes
from inference import Variant
from inference.formats.graph_json import (
    adapter_problem,
    graph_collections,
    node_data,
    output_tensors,
    web_app_dir,
)
from inference.registry.graphs import GRAPHS, GraphStore
from tests.conftest import RunnerPool

pytestmark = pytest.mark.skipif(adapter_problem() is not None, reason=str(adapter_problem()))


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(Starlette(routes=graph_routes()))


def test_the_graph_of_lite0_int8_has_its_ops_and_their_tensors(runners: RunnerPool) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = runners.path("efficientnet_lite0", Variant.INT8)
    graphs = graph_collections(path)
    nodes = graphs["graphCollections"][0]["graphs"][0]["nodes"]
    interpreter = Interpreter(model_path=str(path))
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    # Model Explorer's op nodes: LiteRT's ops (plus GraphInputs/GraphOutputs and constants).
    labels = [n["label"] for n in nodes]
    assert sum(label == "conv_2d" for label in labels) == sum(
        op["op_name"] == "CONV_2D" for op in ops
    )
    found = output_tensors(graphs)
    for op in ops:
        assert names[int(op["outputs"][0])] in found  # each op's output names a node


def test_node_data_is_keyed_by_tensor_with_a_gradient() -> None:
    data = node_data({"a;b": 12.34567, "c": 40.0})
    assert data["main"]["results"] == {"a;b": {"value": 12.346}, "c": {"value": 40.0}}
    stops = [s["stop"] for s in data["main"]["gradient"]]
    assert stops == sorted(stops) and stops[0] == 0.0 and stops[-1] == 1.0


def test_the_store_hands_out_numbers_a_browser_reads_exactly() -> None:
    store = GraphStore(max_entries=2)
    first, second, third = store.put("1"), store.put("2"), store.put("3")
    assert all(0 < n < 2**53 for n in (first, second, third))
    assert store.get(first) is None and store.get(third) == "3"  # the oldest left


def test_the_index_is_served_with_no_outside_font(client: TestClient) -> None:
    page = client.get(f"{PREFIX}/")
    assert page.status_code == 200
    assert f'<base href="{PREFIX}/">' in page.text
    assert "fonts.gstatic.com" not in page.text and "googleapis" not in page.text
    folder = web_app_dir()
    script = next(p.name for p in folder.glob("main-*.js"))
    assert client.get(f"{PREFIX}/{script}").status_code == 200
    assert client.get("/static_files/favicon.svg").status_code == 200


def test_graphs_and_node_data_come_from_the_store_by_number(client: TestClient) -> None:
    number = GRAPHS.put(json.dumps({"graphCollections": []}))
    assert client.get(f"/api/v1/load_graphs_json?graph_index={number}").json() == {
        "graphCollections": []
    }
    data = GRAPHS.put(json.dumps(node_data({"t": 1.0})))
    answer = client.get(f"/api/v1/load_node_data?node_data_index={data}").json()
    assert json.loads(answer["content"])["main"]["results"]["t"]["value"] == 1.0
    assert client.get("/api/v1/load_graphs_json?graph_index=12345").status_code == 404
    assert client.get("/api/v1/load_graphs_json?graph_index=x").status_code == 404
    # Nothing asks the internet for a newer version, and no file path is ever opened.
    assert client.get("/api/v1/check_new_version").json()["version"] == ""
    assert [e["id"] for e in client.get("/api/v1/get_extensions").json()] == ["builtin_json"]
    assert client.get("/api/v1/read_text_file?path=/etc/passwd").status_code == 404


def test_the_quantized_ops_take_the_float_node_ids_of_the_same_tensor(
    runners: RunnerPool,
) -> None:
    from inference.formats.graph_json import matched_ids, side_by_side

    reference = graph_collections(runners.path("efficientnet_lite0", Variant.FP32))
    candidate = graph_collections(runners.path("efficientnet_lite0", Variant.INT8))
    matched = matched_ids(reference, candidate)
    float_ids = output_tensors(reference)
    quant_ids = output_tensors(matched)
    shared = set(float_ids) & set(quant_ids)
    assert len(shared) >= 60  # every op of Lite0 computes a tensor both files name alike
    assert all(float_ids[t] == quant_ids[t] for t in shared)
    nodes = matched["graphCollections"][0]["graphs"][0]["nodes"]
    ids = [n["id"] for n in nodes]
    assert len(ids) == len(set(ids))  # renaming never merged two nodes
    for node in nodes:  # every edge still points at a node of the graph
        assert all(e["sourceNodeId"] in set(ids) for e in node.get("incomingEdges", []))
    both = side_by_side(reference, candidate, ("int8 (quantized)", "fp32 (reference)"))
    graphs = both["graphCollections"][0]["graphs"]
    assert [g["id"] for g in graphs] == ["int8 (quantized)", "fp32 (reference)"]


def test_without_model_explorer_the_page_gets_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from inference.formats import graph_json

    real = importlib.util.find_spec
    monkeypatch.setattr(
        graph_json.importlib.util,
        "find_spec",
        lambda name, *a: None if name == graph_json.ADAPTER else real(name, *a),
    )
    problem = graph_json.adapter_problem()
    assert problem and "\n" not in problem and "ai-edge-model-explorer-adapter" in problem
    with pytest.raises(graph_json.GraphUnavailable, match="adapter"):
        graph_json.graph_collections(web_app_dir() / "index.html")
