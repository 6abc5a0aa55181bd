"""The whole product as people use it: ``streamlit run``, a real browser, and the REST API.

Starts ``streamlit run streamlit_app.py`` on a free localhost port, drives the
page in Debian's headless Chromium through Playwright (never a downloaded
browser), and calls the REST routes served by the same process. Screenshots
are saved in ``artifacts/`` as test artifacts.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from inference.core.specs import SLOW_VARIANTS, TFLITE_VARIANTS
from tests.conftest import CAT_CLASSES, REPO_ROOT, RunnerPool
from tests.helpers.streamlit_server import streamlit_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FASHION_BAG = next((REPO_ROOT / "assets" / "fashion_mnist_sample" / "bag").iterdir())
SESSIONS = 16
SCORE_TOLERANCE = 1e-5
ARTIFACTS = REPO_ROOT / "artifacts"
PAGE_TIMEOUT_MS = 240_000
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
# Model Explorer draws with WebGL: in software here (SwiftShader), which --disable-gpu stops.
WEBGL_FLAGS = [f for f in CHROMIUM_FLAGS if f != "--disable-gpu"] + [
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
]

pytestmark = pytest.mark.slow


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post_image(url: str, name: str, data: bytes, timeout: float = 300) -> tuple[int, object]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def server(runners: RunnerPool, conversion_cache: Path) -> Iterator[str]:
    """``streamlit run streamlit_app.py`` on a free port, with the session's converted files.

    Lite0's variants are converted here, once, as the tests use them: Classify runs its
    defaults (every variant but the slow int16x8; the browser test runs their TFLite files),
    Compare and Layers fp32 and int8, the API fp32 and int8 (and the Keras original).
    """
    runners.convert("efficientnet_lite0", [v for v in TFLITE_VARIANTS if v not in SLOW_VARIANTS])
    runners.convert("fashion_mnist_cnn", [v for v in TFLITE_VARIANTS if v not in SLOW_VARIANTS])
    env = {
        "QUANTLENS_CACHE_DIR": str(conversion_cache),
        # The concurrency tests send hundreds of requests from one address; the
        # rate limit itself is tested in tests/test_api_guard.py.
        "QUANTLENS_API_RATE": "1000000",
        "QUANTLENS_API_BURST": "1000",
        # The concurrency test asks for the Keras original without an API key.
        "QUANTLENS_API_ORIGINAL": "1",
    }
    with streamlit_server(env, ARTIFACTS / "streamlit.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium chromium-driver)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def test_a_deep_link_as_the_first_visit_goes_through_the_router(server: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(f"{server}/models")  # module-scoped server: this is its first session

    page.get_by_text("Your own model").wait_for()
    navigation = page.locator("[data-testid=stSidebarNav]").inner_text()
    page.screenshot(path=ARTIFACTS / "00-deep-link.png")
    page.close()

    assert "Classify" in navigation and "Benchmark" in navigation
    assert "streamlit app" not in navigation.lower()


def test_classify_a_photo_in_a_real_browser_then_compare(
    server: str, browser, chelsea: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(server)
    page.get_by_text("Choose a model first").wait_for()
    page.screenshot(path=ARTIFACTS / "01-landing.png", full_page=True)

    page.locator("[data-testid=stSelectbox]").first.click()
    page.get_by_role("option", name="EfficientNet-Lite0").click()
    page.get_by_text("Upload an image, take a photo").wait_for()  # the uploader is enabled now
    page.locator("input[type=file]").first.set_input_files(str(chelsea))
    heading = page.get_by_text("chelsea.png:").first
    heading.wait_for()
    text = heading.inner_text()
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    chart.wait_for()
    page.screenshot(path=ARTIFACTS / "02-classify.png", full_page=True)

    assert any(label in text for label in CAT_CLASSES), text
    assert chart.locator("canvas, svg").count() >= 1
    assert page.locator("[data-testid=stException]").count() == 0

    page.goto(f"{server}/compare")
    page.get_by_text("Box: quartiles").wait_for()  # the page's last element: the run is done
    page.locator("[data-testid=stVegaLiteChart]").last.wait_for()
    page.screenshot(path=ARTIFACTS / "03-compare.png", full_page=True)
    assert page.locator("[data-testid=stException]").count() == 0
    page.close()


def test_compare_shows_two_photos_that_share_a_file_name_in_a_real_browser(
    server: str, browser, chelsea: Path, coffee: Path
) -> None:
    """Two phones' ``image.jpg``: both are shown, under distinct names."""
    page = browser.new_page(viewport={"width": 1400, "height": 4000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(f"{server}/compare")
    page.get_by_text("Box: quartiles").wait_for()  # the default samples ran
    page.locator("input[type=file]").first.set_input_files(
        [
            {"name": "image.jpg", "mimeType": "image/png", "buffer": chelsea.read_bytes()},
            {"name": "image.jpg", "mimeType": "image/png", "buffer": coffee.read_bytes()},
        ]
    )
    page.get_by_role("heading", name="image (2).jpg").wait_for()
    headings = page.locator("h3").all_inner_texts()
    errors = page.locator("[data-testid=stException]").count()
    page.screenshot(path=ARTIFACTS / "03b-compare-same-names.png")
    page.close()

    assert "image.jpg" in headings and "image (2).jpg" in headings, headings
    assert errors == 0


def test_the_layers_page_names_the_damaging_op_and_runs_the_scan_in_a_real_browser(
    server: str, browser
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 4000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(f"{server}/layers")  # samples chelsea and coffee are preselected
    page.get_by_text("Where error is made, and where it is carried").wait_for()
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    chart.wait_for()
    culprit = page.locator("[data-testid=stMetric]").first.inner_text()
    page.screenshot(path=ARTIFACTS / "04-layers.png", full_page=True)

    page.get_by_role("button", name="Run the scan").click()
    found = page.locator("[data-testid=stMarkdownContainer]", has_text="Most sensitive").first
    found.wait_for(timeout=300_000)
    scanned = found.inner_text()
    found.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "04b-layers-scan.png")
    errors = page.locator("[data-testid=stException]").count()
    drawn = chart.locator("canvas, svg").count()
    page.close()

    assert drawn >= 1
    assert culprit.startswith("Most damaging op") and "#" in culprit, culprit
    assert "with only it quantized" in scanned and "Spearman" in scanned, scanned
    assert errors == 0


def test_the_layers_page_shows_the_graph_synced_with_its_table_in_a_real_browser(
    server: str, browser
) -> None:
    from inference.formats.graph_json import adapter_problem

    if adapter_problem():
        pytest.skip(adapter_problem())
    webgl = browser.browser_type.launch(executable_path=CHROMIUM, args=WEBGL_FLAGS)
    page = webgl.new_page(viewport={"width": 1400, "height": 4000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{server}/layers")
    page.get_by_text("Where error is made, and where it is carried").wait_for()
    page.get_by_text("Show the graph, coloured by each op's own error").click()
    page.get_by_text("Colour: each op's own SNR").wait_for()
    # Model Explorer (drawing with WebGL) in the bridge's frame, inside the page.
    graph = page.frame_locator("iframe[src*='model_graph']").frame_locator("#graph")
    graph.locator("canvas").first.wait_for(timeout=120_000)
    canvases = graph.locator("canvas").count()
    # The most damaging op's row selects its node on the graph, which reports it back.
    table = page.locator(".st-key-layers_worst")
    box = table.bounding_box()
    page.mouse.click(box["x"] + 14, box["y"] + 48)  # the first row's checkbox
    picked = page.get_by_text("Picked on the graph:").first
    picked.wait_for()
    picked_text = picked.inner_text()
    page.get_by_role("button", name="Keep it in float").click()
    page.wait_for_timeout(2000)
    kept = page.locator(".st-key-layers_keep_tensors").inner_text()
    page.screenshot(path=ARTIFACTS / "04c-layers-graph.png")
    # Beside the reference: Model Explorer opens split, the float graph on the right.
    page.get_by_text("Beside the reference (fp32), ops matched").click()
    # Each pane of the split view is titled "<collection> | <graph>".
    graph.get_by_text("| fp32 (reference)").first.wait_for(timeout=120_000)
    graph.get_by_text("| int8 (quantized)").first.wait_for(timeout=120_000)
    panes = (
        graph.get_by_text("| int8 (quantized)").count(),
        graph.get_by_text("| fp32 (reference)").count(),
    )
    page.screenshot(path=ARTIFACTS / "04d-layers-graph-beside.png")
    errors = page.locator("[data-testid=stException]").count()
    webgl.close()

    assert canvases >= 1
    assert panes[0] >= 1 and panes[1] >= 1, panes
    tensor = picked_text.split(": own SNR")[0].split()[-1]  # "#2 CONV_2D <tensor>: ..."
    assert "#" in picked_text and "own SNR" in picked_text and "inherited" in picked_text
    assert tensor in kept.split("\n"), (picked_text, kept)
    served = [u for u in requests if not u.startswith(("data:", "blob:"))]
    assert served and all(u.startswith(server) for u in served), [
        u for u in served if not u.startswith(server)
    ]
    assert any("/model-explorer/" in u for u in served)
    assert any("/api/v1/load_graphs_json" in u for u in served)
    assert errors == 0


def _settled_captions(
    page, wanted: Callable[[list[str]], bool], timeout_s: float = 120
) -> list[str]:
    """The image captions once ``wanted`` holds (a rerun replaces elements one by one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        captions = page.locator("[data-testid=stImageCaption]").all_inner_texts()
        if wanted(captions) or time.monotonic() > deadline:
            return captions
        page.wait_for_timeout(250)


def test_the_behaviour_views_in_a_real_browser(server: str, browser) -> None:
    """Where each variant looks (Classify), calibration, the images a variant forgets and the
    robustness run (Benchmark), on the Fashion-MNIST CNN and its own images."""
    page = browser.new_page(viewport={"width": 1400, "height": 4000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(server)
    page.get_by_text("Choose a model first").wait_for()
    page.locator("[data-testid=stSelectbox]").first.click()
    page.get_by_role("option", name="Fashion-MNIST CNN").click()
    page.get_by_text("Upload an image, take a photo").wait_for()
    page.locator("input[type=file]").first.set_input_files(str(FASHION_BAG))
    page.get_by_text(f"{FASHION_BAG.name}:").first.wait_for()
    page.get_by_text("Where each variant looks").first.click()  # the toggle

    def complete(captions: list[str]) -> bool:
        overlays = [c for c in captions if ": p = " in c]
        return (
            len(overlays) >= 2 and len([c for c in captions if ": IoU " in c]) == len(overlays) - 1
        )

    captions = _settled_captions(page, complete)
    page.get_by_text("Where each variant looks for").first.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "08-classify-saliency.png")
    overlays = [c for c in captions if ": p = " in c]
    pairs = [c for c in captions if ": IoU " in c]
    assert {c.split(":")[0] for c in overlays} >= {"fp32", "int8"}, captions
    assert len(pairs) == len(overlays) - 1  # the reference against each other variant
    assert all(0.0 <= float(c.rsplit("IoU ", 1)[1]) <= 1.0 for c in pairs), pairs
    assert page.locator("[data-testid=stException]").count() == 0

    page.goto(f"{server}/benchmark")
    page.get_by_role("button", name="Evaluate").click()  # the model's own 200-image sample
    page.get_by_text("The images it forgets").first.wait_for()
    page.get_by_text("How sure it should be").first.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "09-benchmark-calibration.png")

    # Severity 5 alone (the page starts with 1, 3 and 5): the strongest, and a short run.
    severities = page.locator("[data-testid=stMultiSelect]").filter(has_text="Severities")
    severities.locator("input").click()
    for _ in range(3):
        page.keyboard.press("Backspace")
    page.keyboard.type("5")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Run robustness").click()
    page.get_by_text("mCE relative to").first.wait_for()
    charts = page.locator("[data-testid=stVegaLiteChart]")
    charts.last.locator("canvas, svg").first.wait_for()  # the robustness chart, drawn
    page.get_by_text("What breaks it first").first.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "10-benchmark-robustness.png")
    drawn, count = charts.last.locator("canvas, svg").count(), charts.count()
    text = page.locator("[data-testid=stMain]").inner_text()
    errors = page.locator("[data-testid=stException]").count()
    page.close()

    assert drawn >= 1 and count >= 3  # reliability, confusion, robustness (at least)
    assert "ECE" in text and "on 200 images" in text
    assert "gaussian_noise" in text and "resize_nearest" in text
    assert errors == 0


def test_rest_api_predict_next_to_the_dashboard(server: str, chelsea: Path) -> None:
    status, rows = _post_image(
        f"{server}/api/predict?model=efficientnet_lite0&variant=int8&top_k=3",
        "chelsea.png",
        chelsea.read_bytes(),
    )

    assert status == 200
    (row,) = rows
    assert row["model"] == "efficientnet_lite0" and row["variant"] == "int8"
    assert len(row["top_k"]) == 3 and row["top_k"][0]["label"] in CAT_CLASSES
    assert set(row["timing_ms"]) == {"decode", "preprocess", "inference", "total"}
    assert row["image"] == "chelsea.png"

    status, rows = _post_image(
        f"{server}/api/predict?variant=fp32,int8", "c.png", chelsea.read_bytes()
    )
    assert status == 200 and [r["variant"] for r in rows] == ["fp32", "int8"]


def test_sixteen_concurrent_clients_get_single_client_results(
    server: str, chelsea: Path, coffee: Path
) -> None:
    """Sixteen requests at once through the server's shared cached runners."""
    photos = [chelsea, coffee]
    url = f"{server}/api/predict?variant=original,int8&top_k=5"
    single = [_post_image(url, p.name, p.read_bytes())[1] for p in photos]

    def client(index: int) -> object:
        photo = photos[index % 2]
        return _post_image(url, photo.name, photo.read_bytes())

    with ThreadPoolExecutor(SESSIONS) as pool:
        answers = list(pool.map(client, range(SESSIONS)))

    for index, (status, rows) in enumerate(answers):
        assert status == 200
        expected = single[index % 2]
        for row, reference in zip(rows, expected, strict=True):
            assert [c["label"] for c in row["top_k"]] == [c["label"] for c in reference["top_k"]]
            for got, want in zip(row["top_k"], reference["top_k"], strict=True):
                assert abs(got["score"] - want["score"]) <= SCORE_TOLERANCE


def test_rest_api_models_and_health(server: str) -> None:
    status, body = _get(f"{server}/api/models")
    assert status == 200
    names = [m["name"] for m in json.loads(body)]
    assert "efficientnet_lite0" in names and "fashion_mnist_cnn" in names

    status, body = _get(f"{server}/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


@pytest.mark.parametrize(
    ("query", "name", "data", "status", "phrase"),
    [
        ("variant=int9", "a.png", None, 400, "expected variant"),
        ("model=alexnet", "a.png", None, 404, "expected model"),
        ("top_k=0", "a.png", None, 400, "top_k"),
        ("", "notes.jpg", b"just text", 400, "notes.jpg: not an image"),
        ("", "big.jpg", b"\xff" * (26 * 1024 * 1024), 413, "limited to 25 MB"),
    ],
    ids=["variant", "model", "top_k", "not-an-image", "too-large"],
)
def test_rest_api_rejects_bad_requests_with_json(
    server: str, chelsea: Path, query: str, name: str, data: bytes | None, status: int, phrase: str
) -> None:
    answer, body = _post_image(f"{server}/api/predict?{query}", name, data or chelsea.read_bytes())

    assert answer == status
    assert phrase in body["error"]


def test_rest_api_refuses_chunked_uploads_it_cannot_size(server: str, chelsea: Path) -> None:
    import http.client
    from urllib.parse import urlparse

    body = [
        b'--x\r\nContent-Disposition: form-data; name="image"; filename="c.png"\r\n\r\n',
        chelsea.read_bytes(),
        b"\r\n--x--\r\n",
    ]
    where = urlparse(server)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    connection.putrequest("POST", "/api/predict")
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    try:
        for part in body:
            connection.send(b"%x\r\n%s\r\n" % (len(part), part))
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the body ended: its answer is read below
    response = connection.getresponse()
    assert response.status == 411
    assert "Content-Length" in json.loads(response.read())["error"]
    connection.close()


def test_rest_api_without_an_image_field(server: str) -> None:
    request = urllib.request.Request(f"{server}/api/predict", data=b"x=1", method="POST")
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("expected a 400")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
        assert "file field 'image'" in json.loads(exc.read())["error"]


def _classify_samples(page, server: str, samples: list[str]) -> None:
    """Open Classify, pick EfficientNet-Lite0 and bundled samples; wait for the last answer."""
    page.goto(server)
    page.get_by_text("Choose a model first").wait_for()
    page.locator("[data-testid=stSelectbox]").first.click()
    page.get_by_role("option", name="EfficientNet-Lite0").click()
    page.get_by_text("Upload an image, take a photo").wait_for()
    page.locator("[data-testid=stMultiSelect]").nth(1).click()
    for sample in samples:
        page.get_by_role("option", name=sample).click()
    page.keyboard.press("Escape")
    page.get_by_text(f"{samples[-1]}:").first.wait_for()


def test_the_variants_run_in_the_visitors_browser_with_litertjs(server: str, browser) -> None:
    """The TFLite variants of Lite0 run in Chromium, offline; one it cannot get is skipped."""
    page = browser.new_page(viewport={"width": 1400, "height": 4200})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    # The server refuses w4's file, as it refuses a variant it cannot serve.
    page.route(
        "**/api/browser-file?*variant=w4*",
        lambda route: route.fulfill(
            status=503, content_type="application/json", body='{"error": "w4 is not ready"}'
        ),
    )
    _classify_samples(page, server, ["chelsea.jpg", "coffee.jpg"])

    page.get_by_role("button", name="Run in my browser").click()
    summary = page.get_by_text("Same top-1 as the server in").first
    summary.wait_for(timeout=180_000)
    text = summary.inner_text()
    skipped = page.get_by_text("w4 could not run in this browser").first.inner_text()
    page.get_by_text("In your browser").first.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "05-browser.png")
    page.close()

    # The other variants offered by default (fp32, fp16, dynamic, int8) on both photos.
    assert "8 of 8" in text and "backend wasm" in text, text
    assert skipped == "w4 could not run in this browser: w4 is not ready"
    assert "int8" in text and "fp32" in text
    fetched = [url for url in requests if "/api/browser-file" in url]
    assert any("variant=int8" in url for url in fetched) and any(
        "variant=fp32" in url for url in fetched
    )
    elsewhere = [u for u in requests if not u.startswith((server, "data:", "blob:"))]
    assert elsewhere == []  # nothing from a CDN: the app works offline


def test_a_browser_without_wasm_simd_gets_one_line(server: str, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 3000})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.add_init_script("WebAssembly.validate = () => false;")  # every frame: no SIMD
    _classify_samples(page, server, ["chelsea.jpg"])

    page.get_by_role("button", name="Run in my browser").click()
    warning = page.get_by_text("This browser has no WebAssembly SIMD").first
    warning.wait_for()
    text = warning.inner_text()
    page.close()

    assert "LiteRT.js needs" in text
