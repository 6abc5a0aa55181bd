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
