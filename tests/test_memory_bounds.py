"""One upload must not exhaust memory: labelled sets are streamed, sessions keep bounded bytes.

The search (autoquant) and the evaluation decode and preprocess a labelled set
batch by batch and keep only predictions; a zip is read member by member when
an image is used; the Layers page keeps at most ``MAX_SESSION_INPUT_BYTES`` of
preprocessed inputs per session; uploaded zips over 2 000 images are refused in
one line, the command line takes up to 20 000.
"""

from __future__ import annotations

import gc
import io
import tracemalloc
import weakref
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import streamlit as st

from inference import InputError, Variant, get_spec
from inference.analysis import search as autoquant_module
from inference.analysis.evaluate import labelled_set, scan_folder, scan_zip
from inference.engine import shards as shards_module
from inference.engine.runners import LiteRTRunner
from inference.formats.images import decode_image, normalize, preprocess
from tests.conftest import REPO_ROOT, RunnerPool

FASHION = get_spec("fashion_mnist_cnn")
SAMPLE_PNGS = sorted(FASHION.labelled_sample.rglob("*.png"))  # 200 real images, 20 per class
FASHION_IMAGE_BYTES = 28 * 28 * 4
"""One preprocessed Fashion-MNIST image (float32)."""


def _zip(count: int, *, broken: int = 0) -> bytes:
    """A labelled zip of ``count`` real Fashion-MNIST PNGs (the sample, repeated)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            path = SAMPLE_PNGS[i % len(SAMPLE_PNGS)]
            archive.writestr(f"set/{path.parent.name}/{i:05d}.png", path.read_bytes())
        for i in range(broken):
            archive.writestr(f"set/bag/broken-{i}.png", b"not a picture")
    return buffer.getvalue()


def _expected_inputs(dataset) -> tuple[list[np.ndarray], list[int]]:
    """Every readable image of the set, decoded and preprocessed on its own."""
    pre = FASHION.preprocessing
    inputs, labels = [], []
    for item in dataset.images:
        try:
            image = decode_image(item.source, name=item.name, color_mode=pre.color_mode)
        except InputError:
            continue
        inputs.append(preprocess(image, pre))
        labels.append(item.label)
    return inputs, labels


# --- the search, with its models replaced by cheap deterministic stand-ins -------------------


_TRUTH: dict[int, int] = {}


def _truth() -> dict[int, int]:
    """The sample's true classes, by the checksum of each preprocessed image."""
    if not _TRUTH:
        for item in scan_folder(FASHION.labelled_sample, FASHION.labels).images:
            pre = FASHION.preprocessing
            x = preprocess(decode_image(item.source, color_mode=pre.color_mode), pre)
            _TRUTH[zlib.crc32(x.tobytes())] = item.label
    return _TRUTH


def _fake_class(batch: np.ndarray, damage: int) -> np.ndarray:
    """A stand-in classifier: right on every sample image, wrong on some when ``damage`` > 0."""
    _truth()
    keys = [zlib.crc32(np.ascontiguousarray(row[None]).tobytes()) for row in batch]
    answer = np.asarray([_TRUTH[k] for k in keys])
    if damage:
        hit = np.asarray([k % (damage + 2) == 0 for k in keys])
        answer = np.where(hit, (answer + 1) % 10, answer)
    return answer


class FakeRunner:
    """Stands in for LiteRTRunner: answers depend on the image and on which file it is."""

    largest_batch = 0

    def __init__(self, spec, variant, path: Path) -> None:
        self.path = path
        self.damage = 0 if path.name == "float.tflite" else int(path.stem.split("-")[1])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        FakeRunner.largest_batch = max(FakeRunner.largest_batch, len(batch))
        probabilities = np.zeros((len(batch), 10), np.float32)
        probabilities[np.arange(len(batch)), _fake_class(batch, self.damage)] = 1
        return probabilities

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class FakeSearch:
    builds: int = 0
    probes: tuple[tuple[int, ...], ...] = ()


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeSearch:
    """The search's conversions, runners and layer report, replaced (no model is built)."""
    state = FakeSearch()
    float_file = tmp_path / "float.tflite"
    float_file.write_bytes(b"float")
    # Damage shrinks as more tensors stay float: 3, then 2, 1, 0 (the last fits any budget).
    damages = iter([3, 2, 1, 0, 0, 0, 0])

    def ensure_recipe(spec, recipe, progress=None, calibration=None):
        state.builds += 1
        path = tmp_path / f"candidate-{next(damages)}-{state.builds}.tflite"
        path.write_bytes(b"x" * 100)
        return path

    def compare_layers(reference, candidate, probe):
        state.probes = tuple(np.shape(p) for p in probe)
        records = [SimpleNamespace(tensor=f"tensor_{i}") for i in range(5)]
        return SimpleNamespace(records=records, most_damaging=lambda n: records[:n])

    monkeypatch.setattr(
        autoquant_module,
        "ensure_variants",
        lambda spec, variants, progress=None: {Variant.FP32: float_file},
    )
    monkeypatch.setattr(autoquant_module, "ensure_recipe", ensure_recipe)
    monkeypatch.setattr(autoquant_module, "recipe_variant_spec", lambda spec, path, name: spec)
    monkeypatch.setattr(autoquant_module, "LiteRTRunner", FakeRunner)
    monkeypatch.setattr(autoquant_module, "compare_layers", compare_layers)
    FakeRunner.largest_batch = 0
    return state


def _count_alive_preprocessed(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Wrap the shard unit's ``normalize`` (each image's float input): how many of its outputs
    are alive at most, at once."""
    counts = {"alive": 0, "peak": 0, "made": 0}

    def gone() -> None:
        counts["alive"] -= 1

    def counting(pixels, mode):
        out = normalize(pixels, mode)
        counts["alive"] += 1
        counts["made"] += 1
        counts["peak"] = max(counts["peak"], counts["alive"])
        # The data's owner: a view (``out[0]``) outlives ``out`` itself but keeps its base.
        weakref.finalize(out if out.base is None else out.base, gone)
        return out

    # The search preprocesses through the unit every engine runs (inference.engine.shards).
    monkeypatch.setattr(shards_module, "normalize", counting)
    return counts


def test_the_search_never_holds_the_whole_set(
    fake_models: FakeSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = 1000
    dataset = scan_zip(_zip(images), FASHION.labels, name="set.zip")
    monkeypatch.setattr(autoquant_module, "INPUT_CACHE_BYTES", 0, raising=False)
    counts = _count_alive_preprocessed(monkeypatch)

    result = autoquant_module.search(FASHION, dataset, max_drop=0.0)

    assert result.images == images and len(result.steps) >= 3
    batch = getattr(autoquant_module, "BATCH_SIZE", 64)
    # One batch being preprocessed, plus the few probe images kept for the layer ranking.
    assert counts["peak"] <= batch + autoquant_module.PROBE_IMAGES, counts
    assert FakeRunner.largest_batch <= batch
    # Every step ran on every image: with nothing cached, each pass decodes the set again.
    assert counts["made"] >= images * len(result.steps)
    assert len(fake_models.probes) == autoquant_module.PROBE_IMAGES
    assert all(shape == (1, 28, 28, 1) for shape in fake_models.probes)


def test_the_search_keeps_at_most_its_input_budget_between_steps(
    fake_models: FakeSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = 2000
    whole_set = images * FASHION_IMAGE_BYTES  # 6.3 MB preprocessed
    budget = 200_000
    dataset = scan_zip(_zip(images), FASHION.labels, name="set.zip")
    monkeypatch.setattr(autoquant_module, "INPUT_CACHE_BYTES", budget, raising=False)
    _truth()  # the stand-in classifier's table, made before measuring
    gc.collect()

    tracemalloc.start()
    try:
        result = autoquant_module.search(FASHION, dataset, max_drop=0.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.images == images
    # The budget, one batch in flight (and its copies), the probes, Python's own small change.
    assert peak < budget + 1_500_000 < whole_set / 3, peak


def test_the_search_scores_every_readable_image_as_each_image_alone(
    fake_models: FakeSearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = scan_zip(_zip(333, broken=2), FASHION.labels, name="set.zip")
    monkeypatch.setattr(autoquant_module, "INPUT_CACHE_BYTES", 40 * FASHION_IMAGE_BYTES,
                        raising=False)  # fmt: skip
    steps = []

    result = autoquant_module.search(FASHION, dataset, max_drop=0.0, on_step=steps.append)

    inputs, labels = _expected_inputs(dataset)
    assert len(inputs) == result.images == 333  # the two broken images are skipped

    def accuracy(damage: int) -> float:
        answers = [int(_fake_class(x, damage)[0]) for x in inputs]
        return float(np.mean(np.asarray(answers) == np.asarray(labels)))

    assert result.float_accuracy == accuracy(0)
    assert [s.accuracy for s in result.steps] == [
        accuracy(int(s.path.stem.split("-")[1])) for s in result.steps
    ]
    # Doubling until a step fits (4), then bisecting back towards fewer float ops (3).
    assert [len(s.kept) for s in steps] == [0, 1, 2, 4, 3]
    assert [len(s.kept) for s in result.steps] == [0, 1, 2, 3, 4]
    fitting = [s for s in result.steps if s.fits]
    assert result.chosen is min(fitting, key=lambda s: s.size_bytes)


# --- zips: refused over the limits in one line, read member by member ------------------------


def test_an_uploaded_zip_over_2000_images_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ui import layers as ui_layers

    data = _zip(2001)
    st.session_state.clear()

    with pytest.raises(InputError) as refused:
        labelled_set(FASHION, data, "big.zip")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("big.zip: 2001 images") and "2000" in message

    # The Layers page's flip search refuses it too, instead of looking at the first 2 000.
    with pytest.raises(InputError, match=r"^big\.zip: 2001 images.*2000"):
        ui_layers.zip_batches(FASHION, "big.zip", data)
    assert len(labelled_set(FASHION, _zip(2000), "ok.zip").images) == 2000


def test_the_command_line_takes_up_to_20000_images(tmp_path: Path) -> None:
    from inference.cli import _labelled_set

    over_page_limit = tmp_path / "big.zip"
    over_page_limit.write_bytes(_zip(2001))
    assert len(_labelled_set(over_page_limit, FASHION.labels).images) == 2001

    tiny = SAMPLE_PNGS[0].read_bytes()
    too_many = tmp_path / "huge.zip"
    with zipfile.ZipFile(too_many, "w", zipfile.ZIP_STORED) as archive:
        for i in range(20_001):
            archive.writestr(f"bag/{i:05d}.png", tiny)
    with pytest.raises(InputError) as refused:
        _labelled_set(too_many, FASHION.labels)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("huge.zip: 20001 images") and "20000" in message


def test_a_zip_is_read_member_by_member_when_its_images_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.cli import _labelled_set

    path = tmp_path / "set.zip"
    path.write_bytes(_zip(300))
    expected = SAMPLE_PNGS[0].read_bytes()
    reads = []
    original = zipfile.ZipFile.open

    def counting_open(self, name, *args, **kwargs):
        reads.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", counting_open)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("whole zip read"))

    dataset = _labelled_set(path, FASHION.labels)

    assert reads == []  # scanning reads the directory only
    first = dataset.images[0].source
    assert first == expected and len(reads) == 1


# --- the Layers page: what a session keeps is bounded in bytes -------------------------------


def _array_bytes(root: object) -> int:
    """Bytes of every distinct numpy array reachable from ``root`` (containers and objects)."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type(None), Path, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj if obj.base is None else obj.base
            if isinstance(base, np.ndarray) and id(base) not in seen:
                seen.add(id(base))
                total += base.nbytes
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
        elif hasattr(obj, "__slots__"):
            stack.extend(getattr(obj, s) for s in obj.__slots__ if hasattr(obj, s))
    return total


def test_the_layers_page_keeps_preprocessed_inputs_within_its_byte_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ui import layers as ui_layers
    from ui.resources import ImageInput

    budget = 1_000_000  # stands for the 200 MB a session may keep: the same rule, scaled down
    monkeypatch.setattr(ui_layers, "MAX_SESSION_INPUT_BYTES", budget, raising=False)
    st.session_state.clear()
    uploads = [ImageInput(f"{i}.png", p.read_bytes()) for i, p in enumerate(SAMPLE_PNGS)]
    data = _zip(1998, broken=2)

    images = ui_layers.image_batches(FASHION, uploads, with_calibration=False)  # 0.6 MB
    pool = ui_layers.zip_batches(FASHION, "set.zip", data)  # 6.3 MB preprocessed

    kept = _array_bytes(dict(st.session_state))
    assert kept <= budget, kept
    # The page still sees every readable image, named class/file, as if decoded at once.
    dataset = scan_zip(data, FASHION.labels, name="set.zip")
    expected, _ = _expected_inputs(dataset)
    assert len(pool.inputs) == len(pool.names) == 1998
    assert pool.names[0] == "ankle_boot/00000.png"
    for index in (0, 1, 997, 1997):
        np.testing.assert_array_equal(pool.inputs[index], expected[index])
    assert sum(1 for _ in pool.inputs) == 1998
    assert len(images.inputs) == 200
    pre = FASHION.preprocessing
    last = preprocess(decode_image(SAMPLE_PNGS[-1], color_mode=pre.color_mode), pre)
    np.testing.assert_array_equal(list(images.inputs)[-1], last)
    st.session_state.clear()


def test_a_small_set_is_kept_preprocessed(monkeypatch: pytest.MonkeyPatch) -> None:
    from ui import layers as ui_layers

    st.session_state.clear()
    pool = ui_layers.zip_batches(FASHION, "set.zip", _zip(50))

    assert isinstance(pool.inputs, list) and len(pool.inputs) == 50  # no decoding on use
    assert _array_bytes(dict(st.session_state)) == 50 * FASHION_IMAGE_BYTES
    st.session_state.clear()


# --- the real model: the streamed accuracy equals every image run on its own -----------------


class _Enough(Exception):
    pass


@pytest.mark.slow
def test_streamed_search_equals_each_image_run_alone_on_the_real_model(tmp_path: Path) -> None:
    from inference.engine.convert import ensure_variants

    data = _zip(200, broken=1)
    dataset = scan_zip(data, FASHION.labels, name="sample.zip")
    steps = []

    def two_steps(step) -> None:
        steps.append(step)
        if len(steps) == 2:
            raise _Enough

    with pytest.raises(_Enough):
        autoquant_module.search(FASHION, dataset, max_drop=-100.0, on_step=two_steps)

    inputs, labels = _expected_inputs(dataset)
    assert len(inputs) == 200
    truth = np.asarray(labels)
    from inference.registry.user_models import recipe_variant_spec

    for step in steps:
        made = recipe_variant_spec(FASHION, step.path, "step")
        with LiteRTRunner(made, made.variants[0], step.path) as runner:
            answers = np.asarray([int(runner.predict(x).argmax()) for x in inputs])
        assert step.accuracy == float(np.mean(answers == truth))
    assert [len(s.kept) for s in steps] == [0, 1]
    float_file = ensure_variants(FASHION, [Variant.FP32])[Variant.FP32]
    with LiteRTRunner(FASHION, Variant.FP32, float_file) as runner:
        answers = np.asarray([int(runner.predict(x).argmax()) for x in inputs])
    assert steps[0].drop_points == pytest.approx(
        (float(np.mean(answers == truth)) - steps[0].accuracy) * 100
    )


@pytest.mark.slow
def test_the_layers_page_refuses_an_uploaded_zip_over_2000_images_in_one_line(
    runners: RunnerPool,
) -> None:
    from streamlit.testing.v1 import AppTest

    runners.convert("fashion_mnist_cnn", [Variant.FP32, Variant.INT8])
    big = ("big.zip", _zip(2001), "application/zip")
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/layers.py").run()
    at.selectbox(key="layers_model").set_value("fashion_mnist_cnn").run()

    at.file_uploader(key="layers_flip_zip").set_value(big).run()

    assert not at.exception
    (flips,) = [e.value for e in at.error]
    assert "big.zip: 2001 images; at most 2000" in flips and "\n" not in flips
    assert any(" of 2 image(s)" in c.value for c in at.caption)  # the page's own images instead

    at.file_uploader(key="layers_zip").set_value(big).run()
    at.button(key="layers_search").click().run()

    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 2 and "big.zip: 2001 images; at most 2000" in errors[1]
    assert "\n" not in errors[1] and "layers_search_result" not in at.session_state


@pytest.mark.slow
def test_the_layers_page_finds_flips_in_2000_images_over_its_byte_budget(
    runners: RunnerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from ui import layers as ui_layers

    # The page opens on int8 against fp32, then the test picks w4.
    runners.convert("fashion_mnist_cnn", [Variant.FP32, Variant.INT8, Variant.W4])
    budget = 1_000_000  # 2 000 Fashion-MNIST images are 6.3 MB preprocessed
    monkeypatch.setattr(ui_layers, "MAX_SESSION_INPUT_BYTES", budget, raising=False)
    at = AppTest.from_file(str(REPO_ROOT / "streamlit_app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/layers.py").run()
    at.selectbox(key="layers_model").set_value("fashion_mnist_cnn").run()
    at.selectbox(key="layers_candidate").set_value("w4").run()

    at.file_uploader(key="layers_flip_zip").set_value(
        ("set.zip", _zip(2000), "application/zip")
    ).run()

    assert not at.exception and not at.error
    (summary,) = [c.value for c in at.caption if "change their top-1" in c.value]
    assert " of 2000 image(s)" in summary and int(summary.split(" of ")[0]) >= 1
    pool = at.session_state["layers_zip_batches"][1]
    assert not isinstance(pool.inputs, list) and len(pool.inputs) == 2000
    assert pool.kept_bytes + at.session_state["layers_batches"][1].kept_bytes <= budget
    assert all(" → " in e.label for e in at.expander)  # flipped images, with their tensors
