"""The Streamlit app through AppTest: start at the router, switch pages, real model, real photos."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from inference import ZOO, Variant
from inference.engine.convert import conversion_record
from inference.formats.recipes import builtin_recipe, parse_recipe
from inference.registry import background_conversions as background
from inference.registry.background_conversions import CONVERSIONS
from tests.conftest import CAT_CLASSES, REPO_ROOT, RunnerPool

APP_TIMEOUT_S = 300
ENTRYPOINT = str(REPO_ROOT / "streamlit_app.py")

pytestmark = pytest.mark.slow


@pytest.fixture
def converted(runners: RunnerPool) -> None:
    """The session pool converts lite0's fp32 and int8 once; the app finds them in the cache."""
    runners.convert("efficientnet_lite0", [Variant.FP32, Variant.INT8])


def start() -> AppTest:
    at = AppTest.from_file(ENTRYPOINT, default_timeout=APP_TIMEOUT_S)
    at.run()
    assert not at.exception
    return at


def markdown_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [h.value for h in at.subheader]
    return "\n".join(str(p) for p in parts)


def test_landing_page_asks_for_a_model_first() -> None:
    at = start()

    assert at.selectbox(key="classify_model").value is None
    assert at.file_uploader(key="classify_upload").disabled
    assert at.multiselect(key="classify_samples").disabled
    assert any("Choose a model first" in i.value for i in at.info)


def test_classify_an_uploaded_photo_in_two_variants(converted: None, chelsea: Path) -> None:
    at = start()
    at.selectbox(key="classify_model").set_value("efficientnet_lite0").run()
    assert not at.exception
    at.multiselect(key="classify_variants").set_value(["fp32", "int8"]).run()
    assert not at.file_uploader(key="classify_upload").disabled

    at.file_uploader(key="classify_upload").set_value(
        ("chelsea.png", chelsea.read_bytes(), "image/png")
    ).run()

    assert not at.exception
    assert not at.error
    heading = at.subheader[0].value
    assert heading.startswith("chelsea.png: ")
    assert any(label in heading for label in CAT_CLASSES)
    table = at.dataframe[0].value
    assert list(table["variant"]) == ["fp32", "int8"]
    assert set(table["top-1"]) <= CAT_CLASSES
    assert table["same top-1 as fp32"].iloc[0]
    assert (table["size MB"] > 0).all()
    assert len(at.get("vega_lite_chart")) >= 1

    # Where each variant looks: an overlay per variant, fp32 minus int8, one IoU.
    at.toggle(key="classify_saliency").set_value(True).run()
    assert not at.exception and not at.error
    captions = [i.caption for e in at.get("image") for i in e.proto.imgs]
    assert any(c.startswith("fp32: p = ") for c in captions)
    assert any(c.startswith("int8: p = ") for c in captions)
    assert any(c.startswith("fp32 − int8: IoU ") for c in captions)
    pair = next(f.value for f in at.dataframe if "IoU top 10 %" in f.value.columns)
    assert list(pair["variant"]) == ["int8"] and 0.0 <= pair["IoU top 10 %"].iloc[0] <= 1.0
    assert len(at.get("image")) >= 4  # the picture, two overlays, one difference map


def test_rerun_does_not_recompute_and_measure_again_does(converted: None) -> None:
    at = start()
    at.selectbox(key="classify_model").set_value("efficientnet_lite0").run()
    at.multiselect(key="classify_variants").set_value(["int8"]).run()
    at.multiselect(key="classify_samples").set_value(["coffee.jpg"]).run()
    first = at.session_state["results"]
    timing = next(iter(first.values())).timing

    at.slider(key="classify_top_k").set_value(3).run()  # a widget elsewhere moves
    assert next(iter(at.session_state["results"].values())).timing is timing

    at.button(key="classify_remeasure").click().run()
    assert not at.exception
    assert next(iter(at.session_state["results"].values())).timing is not timing
    assert "espresso" in at.subheader[0].value or "cup" in at.subheader[0].value


def test_several_images_give_a_summary_and_csv(converted: None, chelsea: Path) -> None:
    at = start()
    at.selectbox(key="classify_model").set_value("efficientnet_lite0").run()
    at.multiselect(key="classify_variants").set_value(["int8"]).run()
    at.multiselect(key="classify_samples").set_value(["coffee.jpg"]).run()
    at.file_uploader(key="classify_upload").set_value(
        [
            ("chelsea.png", chelsea.read_bytes(), "image/png"),
            ("notes.jpg", b"this is not a picture", "image/jpeg"),
        ]
    ).run()

    assert not at.exception
    assert len(at.error) == 1 and "notes.jpg" in at.error[0].value
    summary = at.dataframe[-1].value
    assert list(summary["image"]) == ["chelsea.png", "coffee.jpg"]
    assert summary["top-1"].iloc[0] in CAT_CLASSES
    assert summary["top-1"].iloc[1] in {"espresso", "cup"}


def test_compare_page_shows_the_answer_table(converted: None) -> None:
    at = start()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    at.slider(key="compare_runs").set_value(3).run()

    assert not at.exception
    grid = at.dataframe[0].value
    assert list(grid.index) == ["chelsea.jpg", "coffee.jpg"]
    assert list(grid.columns) == ["efficientnet_lite0 · fp32", "efficientnet_lite0 · int8"]
    assert grid.loc["chelsea.jpg"].str.split(",").str[0].isin(CAT_CLASSES).all()
    assert grid.loc["coffee.jpg"].str.contains(" ms").all()
    three_runs = [v for k, v in at.session_state["timings"].items() if k[-1] == "3"]
    assert len(three_runs) == 4  # two images x two variants
    assert all(len(v) == 3 and min(v) > 0 for v in three_runs)


def test_compare_shows_two_photos_that_share_a_file_name(
    converted: None, chelsea: Path, coffee: Path
) -> None:
    at = start()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="compare_samples").set_value([]).run()
    at.slider(key="compare_runs").set_value(1).run()
    at.file_uploader(key="compare_upload").set_value(
        [
            ("image.jpg", chelsea.read_bytes(), "image/png"),
            ("image.jpg", coffee.read_bytes(), "image/png"),
        ]
    ).run()

    assert not at.exception
    grid = at.dataframe[0].value
    assert list(grid.index) == ["image.jpg", "image (2).jpg"]
    assert grid.loc["image.jpg"].str.split(",").str[0].isin(CAT_CLASSES).all()
    assert grid.loc["image (2).jpg"].str.split(",").str[0].isin({"espresso", "cup"}).all()


def test_models_page_lists_the_zoo_and_conversions(converted: None) -> None:
    at = start()
    at.switch_page("pages/models.py").run()

    assert not at.exception
    table = at.dataframe[0].value
    lite0 = table.set_index("model").loc["efficientnet_lite0"]
    assert lite0["offline"] and lite0["source"] == "bundled"
    assert lite0["int8"].endswith("MB")
    assert not table.set_index("model").loc["resnet50"]["offline"]


def _tiny_keras_model(path: Path, classes: int) -> Path:
    import keras

    keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    ).save(path)
    return path


def test_models_page_refuses_mismatched_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _tiny_keras_model(tmp_path / "tiny.keras", classes=3)
    # Session folders are made in root/tmp here: "../../etc/evil.keras" from one of them
    # would land in root/etc, a folder this test owns and can look into.
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(root / "tmp"))
    at = start()
    at.switch_page("pages/models.py").run()

    at.file_uploader(key="models_upload_model").set_value(
        ("../../etc/evil.keras", path.read_bytes(), "application/octet-stream")
    )
    at.file_uploader(key="models_upload_labels").set_value(("labels.txt", b"a\nb\n", "text/plain"))
    at.button(key="models_add").click().run()

    assert not at.exception
    assert any("3 outputs" in e.value and "2 labels" in e.value for e in at.error)
    assert at.session_state["visitor"].models == {}  # the page made the session; none added
    session_dir = at.session_state["session_folder"].path
    assert session_dir.parent == root / "tmp"
    assert not list(session_dir.iterdir())  # refused: nothing kept
    assert not (root / "etc" / "evil.keras").exists()
    assert not [p for p in tmp_path.rglob("*evil*")]  # the file name never became a path


def test_an_uploaded_model_is_usable_on_the_classify_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _tiny_keras_model(tmp_path / "tiny.keras", classes=2)
    # The background conversion waits for the test to look at the page while it is pending.
    release = threading.Event()
    convert = background.ensure_variants

    def held(spec, variants, **options):
        release.wait(60)
        return convert(spec, variants, **options)

    monkeypatch.setattr(background, "ensure_variants", held)
    at = start()
    at.switch_page("pages/models.py").run()
    at.file_uploader(key="models_upload_model").set_value(
        ("tiny.keras", path.read_bytes(), "application/octet-stream")
    )
    at.file_uploader(key="models_upload_labels").set_value(("l.txt", b"yes\nno\n", "text/plain"))
    at.button(key="models_add").click().run()

    assert not at.exception and not at.error
    (spec,) = at.session_state["visitor"].models.values()
    assert spec.title == "tiny.keras" and spec.labels == ("yes", "no")

    at.switch_page("pages/classify.py").run()
    at.selectbox(key="classify_model").set_value(spec.name).run()
    at.multiselect(key="classify_variants").set_value(["original", "int8"]).run()
    at.multiselect(key="classify_samples").set_value(["rocket.jpg"]).run()
    # int8 converts in the background; the Keras original answers meanwhile.
    assert not at.exception and not at.error
    (job,) = CONVERSIONS.running(spec)
    assert job.variants == (Variant.INT8,)
    assert any("Converting tiny.keras to int8" in p.proto.text for p in at.get("progress"))
    assert list(at.dataframe[0].value["variant"]) == ["original"]
    release.set()
    assert job.done.wait(120) and job.error is None
    at.run()  # what the page's one-second poll does once the file is ready
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["variant"]) == ["original", "int8"]
    assert set(table["top-1"]) <= {"yes", "no"}

    at.multiselect(key="classify_samples").set_value(["coffee.jpg"]).run()
    assert not at.get("progress")  # served from the disk cache: nothing pending


def test_a_tflite_only_page_does_not_import_tensorflow(converted: None) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file({ENTRYPOINT!r}, default_timeout={APP_TIMEOUT_S})
        at.run()
        at.selectbox(key="classify_model").set_value("efficientnet_lite0").run()
        at.multiselect(key="classify_variants").set_value(["fp32", "int8"]).run()
        at.multiselect(key="classify_samples").set_value(["chelsea.jpg"]).run()
        assert not at.exception, at.exception
        print(at.subheader[0].value)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600
    )

    assert result.returncode == 0, result.stderr[-2000:]
    heading, modules = result.stdout.strip().splitlines()[-2:]
    assert heading.startswith("chelsea.jpg: ")
    assert modules == "[]"


def test_benchmark_page_measures_and_evaluates(runners: RunnerPool) -> None:
    for model in ("efficientnet_lite0", "fashion_mnist_cnn"):
        runners.convert(model, [Variant.FP32, Variant.INT8])
    at = start()
    at.switch_page("pages/benchmark.py").run()
    assert not at.exception
    at.multiselect(key="bench_variants").set_value(["fp32", "int8"]).run()
    at.slider(key="bench_runs").set_value(5).run()

    at.button(key="bench_run").click().run()

    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["variant"]) == ["fp32", "int8"]
    assert (table["runs"] == 5).all()
    assert (table["median ms"] > 0).all()
    assert (
        table.set_index("variant").loc["int8", "size MB"]
        < table.set_index("variant").loc["fp32", "size MB"]
    )

    at.selectbox(key="bench_eval_model").set_value("fashion_mnist_cnn").run()
    at.button(key="bench_evaluate").click().run()

    assert not at.exception and not at.error
    _, report = at.session_state["bench_evaluation"]
    assert report.images == 200
    assert all(score.accuracy > 0.8 for score in report.scores)
    assert len(at.get("vega_lite_chart")) >= 5  # latency, size, Pareto, reliability, confusion
    frames = [frame.value for frame in at.dataframe]
    summary = next(f for f in frames if "ECE" in f.columns).set_index("variant")
    for score in report.scores:  # the table's ECE is each variant's own
        assert summary.loc[score.variant.value, "ECE"] == round(score.ece, 4)
    flips = next(f for f in frames if any(str(c).startswith("0.9-1.0") for c in f.columns))
    # The images a variant forgets: each one whose top-1 differs from the reference's.
    reference = next(s for s in report.scores if s.variant == report.reference)
    for score in report.scores:
        if score.variant == report.reference:
            continue
        at.selectbox(key="bench_forgotten_variant").set_value(score.variant.value).run()
        differ = int(np.sum(score.top1 != reference.top1))
        gallery = [c.value for c in at.caption if "(truth:" in c.value]
        assert len(gallery) == min(differ, 24)
        assert len(at.get("image")) == len(gallery)
        if not differ:
            assert any("on every image" in c.value for c in at.caption)
    assert set(flips["variant"]) == {s.variant.value for s in report.scores} - {
        report.reference.value
    }

    # What breaks it first: the same sample under noise and contrast, chart and mCE table.
    at.multiselect(key="bench_corruptions").set_value(["gaussian_noise", "contrast"]).run()
    at.multiselect(key="bench_severities").set_value([1, 5]).run()
    at.button(key="bench_robustness").click().run()
    assert not at.exception and not at.error
    _, robust = at.session_state["bench_robustness_report"]
    accuracy = {(r.variant, r.corruption, r.severity): r.accuracy for r in robust.records}
    assert accuracy["fp32", "gaussian_noise", 5] < accuracy["fp32", "clean", 0] - 0.3
    chart = at.get("vega_lite_chart")[-1].proto.spec
    assert '"facet"' in chart and "corruption" in chart and "severity" in chart
    mce = next(f.value for f in at.dataframe if "mCE" in f.value.columns).set_index("variant")
    assert mce.loc["fp32", "mCE"] == 1.0 and mce.loc["int8", "mCE"] > 0
    # Results for another model are not shown once the model changes.
    at.selectbox(key="bench_eval_model").set_value("efficientnet_lite0").run()
    assert not at.exception
    assert not any({"mCE", "ECE"} & set(f.value.columns) for f in at.dataframe)


def test_an_image_over_the_upload_limit_is_refused_by_name(converted: None) -> None:
    from ui.widgets import MAX_IMAGE_MB

    at = start()
    at.selectbox(key="classify_model").set_value("efficientnet_lite0").run()
    at.multiselect(key="classify_variants").set_value(["int8"]).run()

    oversized = b"\xff" * ((MAX_IMAGE_MB + 1) * 1_000_000)
    at.file_uploader(key="classify_upload").set_value(("huge.jpg", oversized, "image/jpeg")).run()

    assert not at.exception
    assert [e.value for e in at.error] == [
        f"huge.jpg: {MAX_IMAGE_MB + 1} MB is over the {MAX_IMAGE_MB} MB limit for images"
    ]


def test_layers_page_reports_and_keeps_a_layer_in_float(converted: None) -> None:
    at = start()
    at.switch_page("pages/layers.py").run()

    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    worst = at.dataframe[0].value  # the 10 most damaging ops
    assert metrics["Most damaging op"] == f"#{worst['#'].iloc[0]} {worst['op'].iloc[0]}"
    assert list(worst["rank"]) == list(range(1, 11))
    assert len(at.get("vega_lite_chart")) >= 1  # SNR made and carried along the network
    assert at.get("download_button")  # CSV and Model Explorer JSON
    # The scan runs in the real-browser test (tests/test_e2e.py) and the CLI's (test_damage.py).

    at.multiselect(key="layers_keep_ops").set_value(["SOFTMAX"]).run()
    at.button(key="layers_fix").click().run()

    assert not at.exception and not at.error
    fixed = at.session_state["layers_fixed"]
    assert [row["variant"] for row in fixed.rows] == ["int8", "int8-float-softmax"]
    assert fixed.rows[0]["same top-1 as reference"] == fixed.rows[1]["same top-1 as reference"] == 1

    # Listed with the model's variants on the other pages, for this session.
    at.switch_page("pages/classify.py").run()
    at.selectbox(key="classify_model").set_value("efficientnet_lite0").run()
    picker = at.multiselect(key="classify_variants")
    assert picker.options[-1] == "int8-float-softmax"
    picker.set_value(["int8", "int8-float-softmax"]).run()
    at.multiselect(key="classify_samples").set_value(["coffee.jpg"]).run()
    assert not at.exception and not at.error and not at.status  # built already: no conversion
    table = at.dataframe[0].value
    assert list(table["variant"]) == ["int8", "int8-float-softmax"]
    assert list(table["top-1"]) == ["espresso", "espresso"]

    # The new variant is a candidate on the Layers page too, flips included.
    at.switch_page("pages/layers.py").run()
    at.selectbox(key="layers_candidate").set_value("int8-float-softmax").run()
    assert not at.exception and not at.error
    assert any("int8-float-softmax against fp32" in str(m.value) for m in at.markdown)


def test_layers_page_compares_a_quantized_file_made_elsewhere(
    runners: RunnerPool, tmp_path: Path
) -> None:
    # Made outside the app: ai-edge-quantizer's own API, its default calibration, three
    # flat calibration inputs.
    from ai_edge_quantizer import quantizer

    from inference.formats.recipes import builtin_recipe

    source = runners.path("efficientnet_lite0", Variant.FP32)
    qt = quantizer.Quantizer(str(source), builtin_recipe(Variant.INT8).rules)
    image = np.zeros((1, 224, 224, 3), np.float32)
    calibration = qt.calibrate({"serving_default": [{"image": image + v} for v in (-0.5, 0, 0.5)]})
    theirs = tmp_path / "theirs.tflite"
    qt.quantize(calibration, enable_progress_report=False).export_model(str(theirs))
    at = start()
    at.switch_page("pages/layers.py").run()

    at.file_uploader(key="layers_candidate_file").set_value(
        ("theirs.tflite", theirs.read_bytes(), "application/octet-stream")
    ).run()

    assert not at.exception and not at.error
    assert any("theirs.tflite against fp32" in str(m.value) for m in at.markdown)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Most damaging op"].startswith("#")
    # Their file read back as a recipe and rebuilt from fp32: the same tensors and outputs.
    assert any("gives the same" in s.value for s in at.success), [s.value for s in at.success]

    at.multiselect(key="layers_keep_ops").set_value(["SOFTMAX"]).run()
    at.button(key="layers_fix").click().run()

    assert not at.exception and not at.error
    fixed = at.session_state["layers_fixed"]
    assert [row["variant"] for row in fixed.rows][1] == "with ops in float"
    assert fixed.rows[0]["variant"].endswith("theirs.tflite")
    assert fixed.path.is_file() and 0 <= fixed.rows[1]["same top-1 as reference"] <= 1


def test_layers_page_finds_flips_in_a_labelled_zip(runners: RunnerPool) -> None:
    import io
    import zipfile

    # The page opens on int8 against fp32, then the test picks w4.
    runners.convert("fashion_mnist_cnn", [Variant.FP32, Variant.INT8, Variant.W4])
    sample = ZOO["fashion_mnist_cnn"].labelled_sample
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(sample.rglob("*.png")):
            archive.write(path, f"{path.parent.name}/{path.name}")
    at = start()
    at.switch_page("pages/layers.py").run()
    at.selectbox(key="layers_model").set_value("fashion_mnist_cnn").run()
    at.selectbox(key="layers_candidate").set_value("w4").run()

    at.file_uploader(key="layers_flip_zip").set_value(
        ("fashion.zip", buffer.getvalue(), "application/zip")
    ).run()

    assert not at.exception and not at.error
    (summary,) = [c.value for c in at.caption if "change their top-1" in c.value]
    flips = int(summary.split(" of ")[0])
    assert " of 200 image(s)" in summary and flips >= 1
    assert len(at.expander) == min(flips, 5)
    assert all(" → " in e.label and "/" in e.label for e in at.expander)  # class/file: a → b


def test_layers_page_search_on_the_bundled_sample(runners: RunnerPool) -> None:
    runners.convert("fashion_mnist_cnn", [Variant.FP32, Variant.INT8])
    at = start()
    at.switch_page("pages/layers.py").run()
    at.selectbox(key="layers_model").set_value("fashion_mnist_cnn").run()

    at.number_input(key="layers_max_drop").set_value(0.5).run()
    at.button(key="layers_search").click().run()

    assert not at.exception and not at.error
    found = at.session_state["layers_search_result"]
    chosen = found.result.chosen
    assert chosen is not None and chosen.drop_points <= 0.5
    assert found.rows[-1]["chosen"] is True
    assert any("Chosen:" in s.value for s in at.success)
    (made,) = at.session_state["visitor"].variants["fashion_mnist_cnn"].values()
    assert made.value == "int8-within-0-5pt"
    assert (
        made.recipe
        == parse_recipe(json.dumps(conversion_record(chosen.path)["recipe"]), name="chosen").text
    )  # the chosen step's recipe, listed with the model's variants


def test_models_page_builds_an_uploaded_recipe_as_a_variant_of_the_model(
    runners: RunnerPool,
) -> None:
    runners.convert("fashion_mnist_cnn", [Variant.FP32])
    at = start()
    at.switch_page("pages/models.py").run()
    at.selectbox(key="models_model").set_value("fashion_mnist_cnn").run()

    at.file_uploader(key="models_recipe_upload").set_value(
        (
            "broken.json",
            b'[{"regex": "(", "operation": "*", "algorithm_key": "no_quantize"}]',
            "application/json",
        )
    )
    at.button(key="models_recipe_build").click().run()
    assert not at.exception
    assert any("broken" in e.value and "regex" in e.value for e in at.error)  # one line

    recipe = builtin_recipe(Variant.W4).keeping_float(operations=("FULLY_CONNECTED",))
    at.file_uploader(key="models_recipe_upload").set_value(
        ("My W4.json", json.dumps(recipe.rules).encode(), "application/json")
    )
    at.button(key="models_recipe_build").click().run()
    assert not at.exception and not at.error
    (made,) = at.session_state["visitor"].variants["fashion_mnist_cnn"].values()
    assert made.value == "my-w4" and made.recipe == recipe.text
    assert at.dataframe[0].value.set_index("model").loc["fashion_mnist_cnn", "recipe variants"] == (
        "my-w4"
    )

    at.switch_page("pages/compare.py").run()
    at.multiselect(key="compare_models").set_value(["fashion_mnist_cnn"]).run()
    assert "my-w4" in at.multiselect(key="compare_variants").options
