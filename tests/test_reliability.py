"""Hostile and odd inputs, concurrent sessions, bounded memory, converter faults.

The corpus is made here, from a real photo: odd-but-valid images must be
classified (a cat stays a cat), broken ones must be refused with one line that
names the file, through the core, the CLI and the classify page.
"""

from __future__ import annotations

import io
import json
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features
from streamlit.testing.v1 import AppTest

from inference import ConversionError, InputError, Variant, classify, custom_spec, get_spec
from inference.core.machine import resident_bytes
from inference.core.specs import TFLITE_VARIANTS
from inference.engine.convert import ensure_variants, is_converted, variant_path
from tests.conftest import CAT_CLASSES, REPO_ROOT, RunnerPool, run_cli

pytestmark = pytest.mark.slow

SESSIONS = 16
MEMORY_GROWTH_LIMIT = 0.05
PREDICTIONS = 500
ZOO_RSS_LIMIT_BYTES = 2_000_000_000
SCORE_TOLERANCE = 1e-5


# --- the corpus -----------------------------------------------------------------------


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(4096)))
        + chunk(b"IEND", b"")
    )


def _cat_corpus(cat: Image.Image) -> dict[str, bytes]:
    """Valid images that show the cat: each must still be classified as a cat."""
    rgba = cat.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(cat.size).point(lambda v: 255 if v > 20 else 0))
    sixteen = Image.fromarray(np.asarray(cat.convert("L"), np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    frames = [cat, cat.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
    corpus = {
        "gray.png": _save(cat.convert("L"), "PNG"),
        "rgba.png": _save(rgba, "PNG"),
        "palette.png": _save(cat.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "sixteen_bit.png": _save(sixteen, "PNG"),
        "cmyk.jpg": _save(cat.convert("CMYK"), "JPEG", quality=95),
        "phone_rotated.jpg": _save(cat.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif),
        "animated.gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "animated.webp": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "photo.bmp": _save(cat, "BMP"),
        "photo.tiff": _save(cat, "TIFF"),
    }
    if features.check("avif"):
        corpus["photo.avif"] = _save(cat, "AVIF")
    return corpus


def _shape_corpus() -> dict[str, bytes]:
    """Valid images of odd shapes: they must be classified, whatever the answer."""
    return {
        "one_pixel.png": _save(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "very_wide.png": _save(Image.new("RGB", (3000, 4), (30, 200, 30)), "PNG"),
        "very_tall.jpg": _save(Image.new("RGB", (4, 3000), (30, 30, 200)), "JPEG"),
    }


def _broken_corpus(cat: Image.Image) -> dict[str, tuple[bytes, str]]:
    """Invalid files and the phrase their one-line error must contain."""
    jpeg = _save(cat, "JPEG")
    png = _save(cat, "PNG")
    return {
        "empty.jpg": (b"", "the file is empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "damaged or truncated"),
        "truncated.png": (png[: len(png) // 3], "damaged or truncated"),
        "letter.jpg": (b"Dear user,\nthis is text.\n", "not an image format"),
        "program.jpg": (b"\x7fELF\x02\x01\x01\x00" + bytes(200), "not an image format"),
        "script.png": (b"#!/bin/sh\nrm -rf /\n", "not an image format"),
        "bomb.png": (_png_bomb(30_000, 30_000), "megapixels are refused"),
    }


@pytest.fixture(scope="module")
def cat(chelsea: Path) -> Image.Image:
    return Image.open(chelsea).convert("RGB")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory, cat: Image.Image) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, data in {**_cat_corpus(cat), **_shape_corpus()}.items():
        (folder / name).write_bytes(data)
    for name, (data, _) in _broken_corpus(cat).items():
        (folder / name).write_bytes(data)
    return folder


def test_core_classifies_every_odd_image_and_refuses_every_broken_one(
    runners: RunnerPool, cat: Image.Image
) -> None:
    runner = runners.get("efficientnet_lite0", Variant.INT8)

    for name, data in _cat_corpus(cat).items():
        labels = {c.label for c in classify(runner, data, name=name, k=5).top_k}
        assert labels & CAT_CLASSES, f"{name}: {labels}"
    for name, data in _shape_corpus().items():
        assert len(classify(runner, data, name=name).top_k) == 5
    for name, (data, phrase) in _broken_corpus(cat).items():
        with pytest.raises(InputError) as caught:
            classify(runner, data, name=name)
        message = str(caught.value)
        assert message.startswith(f"{name}: ") and phrase in message and "\n" not in message


def test_cli_on_the_corpus(runners: RunnerPool, corpus_dir: Path, cat: Image.Image) -> None:
    runners.convert("efficientnet_lite0", [Variant.INT8])
    broken = _broken_corpus(cat)
    valid = sorted(p for p in corpus_dir.iterdir() if p.name not in broken)

    result = run_cli("predict", *map(str, sorted(corpus_dir.iterdir())), "--json")

    assert result.returncode == 1  # some inputs were bad
    rows = json.loads(result.stdout)
    assert sorted(Path(r["image"]).name for r in rows) == [p.name for p in valid]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(broken) and all(e.startswith("error: ") for e in errors)
    for name, (_, phrase) in broken.items():
        assert any(name in e and phrase in e for e in errors), name
    assert "Traceback" not in result.stderr


def test_classify_page_keeps_serving_through_the_corpus(
    runners: RunnerPool, corpus_dir: Path, cat: Image.Image
) -> None:
    runners.convert("efficientnet_lite0", [Variant.INT8])
    broken = _broken_corpus(cat)
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=300).run()
    at.selectbox(key="classify_model").set_value("efficientnet_lite0").run()
    at.multiselect(key="classify_variants").set_value(["int8"]).run()

    files = [
        (p.name, p.read_bytes(), "application/octet-stream") for p in sorted(corpus_dir.iterdir())
    ]
    at.file_uploader(key="classify_upload").set_value(files).run()

    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == len(broken)
    for name, (_, phrase) in broken.items():
        assert any(e.startswith(f"{name}: ") and phrase in e for e in errors), name
    headings = {h.value.split(": ")[0]: h.value for h in at.subheader if ": " in h.value}
    for name in _cat_corpus(cat):
        assert name in headings
    summary = at.dataframe[-1].value
    assert len(summary) == len(files) - len(broken)

    at.multiselect(key="classify_samples").set_value(["coffee.jpg"]).run()  # still serving
    assert not at.exception


# --- model uploads ----------------------------------------------------------------------


def test_keras_model_with_a_custom_layer_is_refused(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import keras

        class Doubler(keras.layers.Layer):
            def call(self, x):
                return x * 2.0

        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2)(Doubler()(inputs)))
        model.save({str(tmp_path / "custom.keras")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)

    refused = r"custom\.keras: cannot load this Keras model: it uses custom layers"
    with pytest.raises(InputError, match=refused):
        custom_spec(tmp_path / "custom.keras")


def test_a_model_declaring_huge_layers_is_refused_without_touching_the_server(
    tmp_path: Path,
) -> None:
    """A .keras config can declare 40 GB of weights; loading it must not happen here."""
    import keras

    small = tmp_path / "small.keras"
    keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    ).save(small)
    with zipfile.ZipFile(small) as archive:
        members = {item.filename: archive.read(item) for item in archive.infolist()}
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dense":
            layer["config"]["units"] = 40_000_000_000 // (4 * 192)  # 40 GB of float32
    huge = tmp_path / "huge.keras"
    with zipfile.ZipFile(huge, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, json.dumps(config) if name == "config.json" else data)
    rss_before = resident_bytes()

    with pytest.raises(InputError, match=r"huge\.keras: .*(memory|parameters)"):
        custom_spec(huge)
    assert resident_bytes() - rss_before < 500_000_000  # the attempt happened in a child


def test_a_keras_zip_bomb_is_refused_from_its_zip_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small .keras whose config.json inflates far: refused before any entry is read."""
    from inference.registry import user_models as custom

    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", "{}")
        with archive.open("config.json", "w", force_zip64=True) as config:
            chunk = b" " * 1_000_000
            for _ in range(60):  # 60 MB of JSON whitespace, ~60 KB on disk
                config.write(chunk)
    assert bomb.stat().st_size < 200_000

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("the archive reached the model checker")

    monkeypatch.setattr(custom, "run_child", no_child)
    with pytest.raises(
        InputError,
        match=r"bomb\.keras: config\.json inflates to 60 MB; a config or metadata over 4 MB",
    ):
        custom_spec(bomb)


def test_a_child_over_its_resident_limit_is_killed(tmp_path: Path) -> None:
    from inference.core.child_process import ChildFailed, run_child

    log = tmp_path / "hog.log"
    fits = run_child("tests.helpers.memory_hog", {"megabytes": 50}, timeout=60, log_path=log,
                     resident_bytes=400_000_000)  # fmt: skip
    assert fits["bytes"] == 50_000_000
    with pytest.raises(ChildFailed) as failure:
        run_child("tests.helpers.memory_hog", {"megabytes": 600, "hold_s": 5}, timeout=60,
                  log_path=log, resident_bytes=400_000_000)  # fmt: skip
    assert failure.value.reason == "memory"


def test_model_size_limits_are_enforced(
    runners: RunnerPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.registry import user_models as custom

    tflite = tmp_path / "lite0.tflite"
    tflite.write_bytes(runners.path("efficientnet_lite0", Variant.FP32).read_bytes())
    facts = custom.inspect_model(tflite)
    assert facts["input_shape"] == [224, 224, 3] and facts["variant"] == "fp32"
    assert 18e6 < facts["tensor_bytes"] < 100e6  # weights plus activations

    monkeypatch.setattr(custom, "MAX_TENSOR_BYTES", 10_000_000)
    with pytest.raises(
        InputError, match=r"lite0\.tflite: its tensors take \d+ MB; models over 10 MB"
    ):
        custom_spec(tflite)


def test_truncated_tflite_is_refused(runners: RunnerPool, tmp_path: Path) -> None:
    data = runners.path("efficientnet_lite0", Variant.INT8).read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(InputError, match=r"cut\.tflite: LiteRT cannot load this model"):
        custom_spec(path)


# --- concurrency -------------------------------------------------------------------------


def test_sixteen_threads_share_runners_and_get_single_session_results(
    runners: RunnerPool, chelsea: Path, coffee: Path
) -> None:
    shared = [
        runners.get("efficientnet_lite0", v) for v in (Variant.ORIGINAL, Variant.FP32, Variant.INT8)
    ]
    photos = [chelsea, coffee]
    expected = {(r.variant, p): classify(r, p, k=5) for r in shared for p in photos}
    start = threading.Barrier(SESSIONS)

    def session(index: int) -> list[tuple[object, object]]:
        start.wait()  # all sixteen hit the runners at once
        out = []
        for step in range(6):
            runner = shared[(index + step) % len(shared)]
            photo = photos[(index + step) % len(photos)]
            out.append(((runner.variant, photo), classify(runner, photo, k=5)))
        return out

    with ThreadPoolExecutor(SESSIONS) as pool:
        outcomes = [item for result in pool.map(session, range(SESSIONS)) for item in result]

    assert len(outcomes) == SESSIONS * 6
    for key, prediction in outcomes:
        reference = expected[key]
        assert [c.label for c in prediction.top_k] == [c.label for c in reference.top_k]
        np.testing.assert_allclose(
            [c.score for c in prediction.top_k],
            [c.score for c in reference.top_k],
            atol=SCORE_TOLERANCE,
        )


def test_sixteen_threads_through_the_apps_shared_cache(chelsea: Path, coffee: Path) -> None:
    """The app's shared runner cache hands every session the same runner; calls stay exact."""
    from inference.registry.runner_cache import RUNNERS

    spec = get_spec("efficientnet_lite0")
    photos = [chelsea, coffee]
    expected = {p: classify(RUNNERS.get(spec, "int8"), p) for p in photos}
    start = threading.Barrier(SESSIONS)

    def session(index: int) -> tuple[int, object]:
        start.wait()
        runner = RUNNERS.get(spec, "int8")
        return id(runner), classify(runner, photos[index % 2])

    with ThreadPoolExecutor(SESSIONS) as pool:
        outcomes = list(pool.map(session, range(SESSIONS)))

    assert len({runner_id for runner_id, _ in outcomes}) == 1
    for index, (_, prediction) in enumerate(outcomes):
        reference = expected[photos[index % 2]]
        assert prediction.top_k == reference.top_k


# --- memory and faults -------------------------------------------------------------------


def test_memory_stays_flat_over_500_predictions(runners: RunnerPool, chelsea: Path) -> None:
    shared = [runners.get("efficientnet_lite0", v) for v in (Variant.FP32, Variant.INT8)]
    data = chelsea.read_bytes()
    for index in range(100):  # warm-up: allocator pools and caches fill here
        classify(shared[index % 2], data, name="warm.png")
    before = resident_bytes()

    for index in range(PREDICTIONS):
        classify(shared[index % 2], data, name="loop.png")

    after = resident_bytes()
    growth = (after - before) / before
    assert growth <= MEMORY_GROWTH_LIMIT, (
        f"RSS grew {growth:.1%} ({before / 1e6:.0f} -> {after / 1e6:.0f} MB)"
    )


def test_whole_offline_zoo_with_all_variants_stays_under_2_gb(runners: RunnerPool) -> None:
    offline = [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "fashion_mnist_cnn",
    ]
    for name in offline:  # convert through the pool so the child below only loads
        runners.convert(name, TFLITE_VARIANTS)
    script = textwrap.dedent(
        f"""
        from inference import Variant, get_spec
        from inference.registry.loading import load_runners
        from inference.core.machine import resident_bytes
        held = [load_runners(get_spec(n), list(Variant)) for n in {offline!r}]
        print(resident_bytes())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )

    rss = int(result.stdout.strip().splitlines()[-1])
    assert rss < ZOO_RSS_LIMIT_BYTES, f"{rss / 1e9:.2f} GB"


def _fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("kill -SEGV $$", "exited with status -11"),
        ("sleep 30", "took longer than 1 s and was stopped"),
    ],
    ids=["crash", "timeout"],
)
def test_converter_crash_or_hang_is_reported_and_the_process_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    monkeypatch.setenv("QUANTLENS_CACHE_DIR", str(tmp_path / "cache"))
    spec = get_spec("efficientnet_lite0")
    leftover = variant_path(spec, Variant.FP16)
    leftover.write_bytes(b"half-written by a converter that died" * 100)
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, body))

    with pytest.raises(ConversionError, match=message):
        ensure_variants(spec, [Variant.FP16], timeout=1)

    assert not leftover.exists()  # the bad file was removed, not served
    assert not is_converted(spec, Variant.FP16)
