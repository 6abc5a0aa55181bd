"""Scale-out: the same answers in one process, on a local pool and on a two-node Ray cluster.

The cluster is Ray's own ``ray.cluster_utils.Cluster`` on this machine: two
nodes of one CPU each, on loopback only, started and shut down by the module
fixture (never ``ray stop``). Answers are compared image by image with the
in-process run, and the work must have landed on both nodes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference import Variant, get_spec
from inference.analysis.evaluate import Evaluation, evaluate, evaluate_conditions, scan_folder
from inference.analysis.search import search
from inference.analysis.sensitivity import sensitivity_scan
from inference.cli import main
from inference.core.paths import ASSETS_DIR
from inference.engine.executors import InProcess, LocalPool, open_engine
from inference.formats.corruptions import Corruption
from inference.formats.datasets import open_labelled
from inference.formats.recipes import variant_recipe
from tests.conftest import REPO_ROOT, RunnerPool

FASHION = "fashion_mnist_cnn"
SAMPLE = ASSETS_DIR / "fashion_mnist_sample"
VARIANTS = (Variant.FP32, Variant.INT8)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    """Two Ray nodes of one CPU each on 127.0.0.1; shut down by this fixture alone."""
    with pytest.MonkeyPatch.context() as patch:
        # Ray names its node by the address it reaches the world from; keep loopback.
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "node_ip_address": "127.0.0.1",
                "include_dashboard": False,
            },
        )
        try:
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            cluster.wait_for_nodes()
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


@pytest.fixture(scope="module")
def fashion(runners: RunnerPool) -> dict[Variant, object]:
    return {v: runners.get(FASHION, v) for v in VARIANTS}


@pytest.fixture(scope="module")
def local_report(fashion: dict[Variant, object]) -> Evaluation:
    spec = get_spec(FASHION)
    return evaluate(spec, fashion, scan_folder(SAMPLE, spec.labels), engine=InProcess())


@pytest.fixture(scope="module")
def photo_set(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 labelled crops of real photos (tabby, espresso, space_shuttle) for Lite0.

    Lite0's inference (fp32, dynamic and int8: ~17 ms an image) outweighs decoding
    here, as in real sets, so a run keeps both nodes' actors busy.
    """
    root = tmp_path_factory.mktemp("photos-labelled")
    for photo, label in (
        ("chelsea", "tabby"),
        ("coffee", "espresso"),
        ("astronaut", "space_shuttle"),
    ):
        image = Image.open(photo_dir / f"{photo}.png").convert("RGB")
        folder = root / label
        folder.mkdir()
        width, height = image.size
        for i in range(16):
            side = int(min(width, height) * (0.6 + 0.025 * i))
            left, top = (width - side) * (i % 5) // 4, (height - side) * (i % 3) // 2
            image.crop((left, top, left + side, top + side)).save(folder / f"{i:02d}.png")
    return root


LITE0_VARIANTS = (Variant.FP32, Variant.DYNAMIC, Variant.INT8)


@pytest.fixture(scope="module")
def lite0(runners: RunnerPool) -> dict[Variant, object]:
    return {v: runners.get("efficientnet_lite0", v) for v in LITE0_VARIANTS}


@pytest.fixture(scope="module")
def lite0_local(lite0: dict[Variant, object], photo_set: Path) -> Evaluation:
    spec = get_spec("efficientnet_lite0")
    return evaluate(spec, lite0, scan_folder(photo_set, spec.labels), engine=InProcess())


def _same_answers(a: Evaluation, b: Evaluation, images: int = 200) -> None:
    assert a.images == b.images == images
    for left, right in zip(a.scores, b.scores, strict=True):
        assert left.variant == right.variant
        np.testing.assert_array_equal(left.top1, right.top1)
        np.testing.assert_allclose(left.confidence, right.confidence, rtol=1e-6)
        assert left.accuracy == right.accuracy and left.agreement == right.agreement
        np.testing.assert_array_equal(left.confusion, right.confusion)


def test_the_local_run_scores_the_sample_as_its_labels_say(local_report: Evaluation) -> None:
    spec = get_spec(FASHION)
    truth = np.asarray([image.label for image in scan_folder(SAMPLE, spec.labels).images])
    for score in local_report.scores:
        assert score.accuracy == pytest.approx(float(np.mean(score.top1 == truth)))
        assert score.accuracy > 0.85
    assert local_report.nodes and sum(local_report.nodes.values()) == 200


def test_two_local_workers_give_the_same_answers(
    fashion: dict[Variant, object], local_report: Evaluation
) -> None:
    spec = get_spec(FASHION)
    with LocalPool(2) as pool:
        report = evaluate(spec, fashion, scan_folder(SAMPLE, spec.labels), engine=pool)
    _same_answers(local_report, report)
    assert report.engine == "running on 2 local worker processes"
    # Worker processes answered (which of the two takes how many small shards varies).
    assert sum(report.nodes.values()) == 200
    assert all(not node.endswith(f":{os.getpid()}") for node in report.nodes), report.nodes
    assert not report.tensorflow_on_workers


def _parquet_copy(folder: Path, out: Path, labels: tuple[str, ...]) -> Path:
    """The sample as one Parquet file of encoded PNG bytes and class names, 4 row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dataset = scan_folder(folder, labels)
    rows = [(Path(i.location).read_bytes(), labels[i.label]) for i in dataset.images]
    table = pa.table({"image": [r[0] for r in rows], "label": [r[1] for r in rows]})
    pq.write_table(table, out, row_group_size=50)
    return out


def test_a_two_node_ray_cluster_gives_the_local_answers_and_both_nodes_work(
    ray_cluster: object,
    lite0_local: Evaluation,
    photo_set: Path,
    fashion: dict[Variant, object],
    runners: RunnerPool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = open_engine(ray_address=ray_cluster.address)
    assert engine.kind == "ray" and engine.nodes == 2
    assert engine.description == "running on a Ray cluster, 2 nodes"

    # Real photos through the command, in this process (it joins the cluster once per
    # process): the local accuracies, top-5 and confusion matrices, and what ran where.
    status = main(["evaluate", "--model", "efficientnet_lite0", "--data", str(photo_set),
                   "--variants", "fp32,dynamic,int8", "--json", "--ray",
                   ray_cluster.address])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "running on a Ray cluster, 2 nodes" in err
    there = json.loads(out)
    espresso = get_spec("efficientnet_lite0").labels.index("espresso")
    for local, row in zip(lite0_local.scores, there["summary"], strict=True):
        assert row["variant"] == local.variant.value
        assert row["accuracy"] == round(local.accuracy, 4)
        assert row["top-5"] == round(local.top5, 4)
        assert there["confusion"][row["variant"]] == local.confusion.tolist()
        assert local.per_class[espresso] >= 0.5  # real answers (crops of a cat are cats)
    run = there["run"]
    assert run["images"] == 48 and run["images_per_second"] > 0
    assert run["engine"] == "running on a Ray cluster, 2 nodes"
    assert sum(n["images"] for n in run["nodes"]) == 48 and all(
        n["share"] > 0 for n in run["nodes"]
    )
    assert sum(run["stage_shares"].values()) == pytest.approx(1.0, abs=1e-3)
    stages = run["stage_seconds"]
    assert {"decode", "preprocess", "inference fp32", "inference int8"} <= set(stages)
    assert stages["inference dynamic"] > stages["decode"]  # inference-bound

    # Fashion-MNIST from Parquet (read row group by row group on the nodes), clean and under
    # noise in one run (rows carry their corruption): the in-process answers image by image.
    # The noise is seeded by each image's name, so a node draws what this process draws.
    fashion_spec = get_spec(FASHION)
    parquet = _parquet_copy(SAMPLE, tmp_path / "sample.parquet", fashion_spec.labels)
    noisy = Corruption("gaussian_noise", 5)

    progress: list[float] = []
    # With w4 (its 4-bit weights cost the most per image) a batch takes long enough for the
    # next one to find the other node's actor free, as on the Benchmark page.
    heavier = {**fashion, Variant.W4: runners.get(FASHION, Variant.W4)}

    def on(engine_: object | None) -> dict:
        return evaluate_conditions(
            fashion_spec, heavier, open_labelled(parquet, fashion_spec.labels), [None, noisy],
            engine=engine_, progress=lambda m, f: progress.append(f),
        )  # fmt: skip

    local = on(None)
    progress.clear()
    on_ray = on(engine)
    for condition in (None, noisy):
        _same_answers(local[condition], on_ray[condition])
        assert not on_ray[condition].tensorflow_on_workers
    assert on_ray[noisy].scores[0].accuracy < on_ray[None].scores[0].accuracy - 0.3
    assert progress and progress[-1] == 1.0
    # Which actor takes a batch depends on timing, and this 2-core machine is shared with
    # the other test worker: every run gives the local answers (above), and the work must
    # land on both nodes in one of this test's runs (one more Parquet run if none did).
    spread = len(run["nodes"]) == 2 or len(on_ray[None].nodes) == 2
    if not spread:
        again = on(engine)
        _same_answers(local[None], again[None])
        spread = len(again[None].nodes) == 2 and min(again[None].nodes.values()) > 0
    assert spread, (run["nodes"], on_ray[None].nodes)


def test_the_sensitivity_scan_on_ray_measures_what_the_local_scan_measures(
    ray_cluster: object, runners: RunnerPool
) -> None:
    spec = get_spec(FASHION)
    float_file = runners.path(FASHION, Variant.FP32)
    dataset = scan_folder(SAMPLE, spec.labels).with_shard_size(32)
    images = [
        np.asarray(Image.open(io.BytesIO(Path(i.location).read_bytes())), np.float32)
        for i in dataset.images[:24]
    ]
    inputs = [(x / 255.0)[None, :, :, None].astype(np.float32) for x in images]
    recipe = variant_recipe(Variant.INT8)
    local = sensitivity_scan(spec, float_file, recipe, inputs, workers=1)
    engine = open_engine(ray_address=ray_cluster.address)
    on_ray = sensitivity_scan(spec, float_file, recipe, inputs, engine=engine)
    assert [r.tensor for r in local.records] == [r.tensor for r in on_ray.records]
    for a, b in zip(local.records, on_ray.records, strict=True):
        assert a.output_snr_db == pytest.approx(b.output_snr_db, abs=1e-6)
        assert a.agreement == b.agreement
    assert on_ray.engine == "running on a Ray cluster, 2 nodes"
    assert len(on_ray.nodes) == 2 and sum(on_ray.nodes.values()) == len(local.records)


def test_the_search_on_ray_takes_the_local_steps(ray_cluster: object, runners: RunnerPool) -> None:
    spec = get_spec(FASHION)
    runners.convert(FASHION, VARIANTS)
    dataset = scan_folder(SAMPLE, spec.labels)
    local = search(spec, dataset, max_drop=0.0)
    on_ray = search(
        spec, dataset, max_drop=0.0, engine=open_engine(ray_address=ray_cluster.address)
    )
    assert [(s.kept, s.lost_images, s.accuracy) for s in local.steps] == [
        (s.kept, s.lost_images, s.accuracy) for s in on_ray.steps
    ]
    assert (local.chosen is None) == (on_ray.chosen is None)


def test_nothing_imports_ray_unless_a_cluster_is_configured() -> None:
    code = (
        "import sys\n"
        "import ui.benchmark, ui.damage, ui.layers\n"
        "from inference.engine.executors import open_engine\n"
        "engine = open_engine(2); engine.close()\n"
        "print(engine.kind, 'ray' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "QUANTLENS_RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pool", "False", "False"]


def test_the_benchmark_page_evaluates_on_the_cluster_in_a_real_browser(
    ray_cluster: object, runners: RunnerPool, conversion_cache: Path
) -> None:
    from tests.helpers.streamlit_server import streamlit_server
    from tests.test_e2e import (
        ARTIFACTS,
        CHROMIUM,
        CHROMIUM_FLAGS,
        PAGE_TIMEOUT_MS,
    )

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    # The page's default variants for the Fashion-MNIST CNN, made before the server starts.
    runners.convert(FASHION, [v for v in Variant if v.is_tflite and v is not Variant.INT16X8])
    env = {
        "QUANTLENS_CACHE_DIR": str(conversion_cache),
        "QUANTLENS_RAY_ADDRESS": ray_cluster.address,
        "QUANTLENS_WARM_START": "0",
    }
    with (
        streamlit_server(env, ARTIFACTS / "streamlit-ray.log") as base,
        playwright_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 4000})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.goto(f"{base}/benchmark")
        page.get_by_text("Evaluations run on the Ray cluster").wait_for()
        page.get_by_role("button", name="Evaluate").click()
        line = page.locator(
            "[data-testid=stCaptionContainer]", has_text="on a Ray cluster, 2 nodes:"
        ).first
        line.wait_for()
        shown = line.inner_text()
        page.get_by_text("Latency vs accuracy").wait_for()
        line.scroll_into_view_if_needed()
        page.screenshot(path=ARTIFACTS / "05-benchmark-ray.png")
        errors = page.locator("[data-testid=stException]").count()
        browser.close()
    assert "200 images in" in shown and "Images per node:" in shown, shown
    shares = [int(p.split()[-1].rstrip("%")) for p in shown.split("Images per node:")[1].split(",")]
    assert len(shares) == 2 and all(share > 0 for share in shares), shown
    assert errors == 0
