"""The download zoo (built without weights), and models people bring themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference import (
    ZOO,
    InputError,
    LiteRTRunner,
    ModelSpec,
    ModelUnavailableError,
    Source,
    Variant,
    classify,
    custom_spec,
    decode_image,
    get_spec,
    is_available,
    load_runner,
    preprocess,
)
from inference.engine.convert import ensure_variants
from inference.models.builders import keras_weights_path
from tests.conftest import assert_one_error_line, run_cli

DOWNLOAD_MODELS = [name for name, spec in ZOO.items() if spec.source is Source.DOWNLOAD]
QUICK_DOWNLOAD_MODEL = "mobilenet_v2"
"""The smallest download model: built in the fast subset; the others (ResNet50, Xception,
EfficientNetB0, up to 25 M parameters each) only in the whole suite, as ``slow``."""
FP32_TOLERANCE = 1e-4
CUSTOM_CLASSES = ("red", "green", "blue", "other")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=() if name == QUICK_DOWNLOAD_MODEL else pytest.mark.slow)
        for name in DOWNLOAD_MODELS
    ],
)
def test_download_models_build_without_weights_and_run_the_same_pipeline(
    name: str, coffee: Path
) -> None:
    from inference import KerasRunner
    from inference.models.builders import build_keras_model, keras_output_kind

    spec = get_spec(name)
    model = build_keras_model(spec, weights=False)
    runner = KerasRunner(spec, model)

    assert tuple(model.input_shape[1:]) == spec.preprocessing.input_shape
    assert keras_output_kind(model) == spec.outputs  # what the spec says the graph ends in
    prediction = classify(runner, coffee, k=5)
    assert prediction.probabilities.shape == (1000,)
    assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    assert len(prediction.top_k) == 5


def test_download_model_offline_raises_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keras.src.utils import file_utils

    from inference.models.builders import build_keras_model

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError(-3, "Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    spec = get_spec("mobilenet_v2")

    with pytest.raises(ModelUnavailableError, match="needs its ImageNet weights from the internet"):
        build_keras_model(spec)


def test_availability_follows_the_keras_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = get_spec("resnet50")
    assert not is_available(spec)
    assert all(is_available(get_spec(f"efficientnet_lite{i}")) for i in range(3))

    path = keras_weights_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")

    assert is_available(spec)


# --- your own model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN that tells red, green and blue apart, trained here in seconds."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images, labels = [], []
    for label in range(4):
        for _ in range(64):
            colour = rng.uniform(0, 90, 3)
            if label < 3:
                colour[label] = rng.uniform(170, 255)
            else:
                colour[:] = rng.uniform(0, 255)
            images.append(np.clip(colour + rng.normal(0, 10, (32, 32, 3)), 0, 255))
            labels.append(label)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.array(images, np.float32), np.array(labels), epochs=40, verbose=0)
    path = tmp_path_factory.mktemp("custom") / "colours.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def colour_labels(colour_model: Path) -> Path:
    path = colour_model.with_name("labels.txt")
    path.write_text("\n".join(CUSTOM_CLASSES) + "\n")
    return path


@pytest.fixture(scope="module")
def colour_spec(colour_model: Path, colour_labels: Path) -> ModelSpec:
    """The colour model described once (each description checks the file in a child process)."""
    return custom_spec(colour_model, colour_labels)


def _solid(tmp_path: Path, name: str, rgb: tuple[int, int, int]) -> Path:
    from PIL import Image

    path = tmp_path / f"{name}.png"
    Image.new("RGB", (64, 48), rgb).save(path)
    return path


def test_custom_keras_model_reads_its_shape_and_labels(colour_spec: ModelSpec) -> None:
    spec = colour_spec

    assert spec.source is Source.CUSTOM
    assert spec.input_size == (32, 32) and spec.labels == CUSTOM_CLASSES
    assert spec.title == "colours.keras"
    assert "/" not in spec.name and spec.name.startswith("custom_")
    assert Variant.ORIGINAL in spec.variants and Variant.INT8 in spec.variants


def test_custom_keras_model_classifies_in_every_variant(
    colour_spec: ModelSpec, tmp_path: Path
) -> None:
    spec = colour_spec
    red = _solid(tmp_path, "red", (230, 20, 30))
    blue = _solid(tmp_path, "blue", (20, 40, 240))
    ensure_variants(spec, [Variant.FP32, Variant.INT8], calibration=[red, blue])

    original = load_runner(spec, Variant.ORIGINAL)
    for variant in (Variant.ORIGINAL, Variant.FP32):
        runner = load_runner(spec, variant)
        assert classify(runner, red).top_k[0].label == "red"
        assert classify(runner, blue).top_k[0].label == "blue"
    fp32 = load_runner(spec, Variant.FP32)
    batch = preprocess(decode_image(red), spec.preprocessing)
    np.testing.assert_allclose(fp32.predict(batch), original.predict(batch), atol=FP32_TOLERANCE)
    int8 = load_runner(spec, Variant.INT8, calibration=[red, blue])
    assert classify(int8, red).top_k[0].label == "red"


def test_custom_tflite_with_labels(
    colour_spec: ModelSpec, colour_labels: Path, tmp_path: Path
) -> None:
    keras_spec = colour_spec
    tflite = ensure_variants(keras_spec, [Variant.FP16])[Variant.FP16]
    copy = tmp_path / "mine.tflite"
    copy.write_bytes(tflite.read_bytes())

    spec = custom_spec(copy, colour_labels)
    runner = load_runner(spec, Variant.FP16)

    assert spec.variants == (Variant.FP16,)
    assert isinstance(runner, LiteRTRunner)
    assert classify(runner, _solid(tmp_path, "g", (10, 250, 20))).top_k[0].label == "green"

    result = run_cli(
        "predict",
        str(_solid(tmp_path, "b", (0, 0, 255))),
        "--model",
        str(copy),
        "--labels",
        str(colour_labels),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["variant"] == "fp16" and row["top_k"][0]["label"] == "blue"


def test_labels_count_must_match_the_outputs(colour_model: Path, tmp_path: Path) -> None:
    labels = tmp_path / "three.txt"
    labels.write_text("red\ngreen\nblue\n")

    with pytest.raises(
        InputError, match="the model has 4 outputs but the labels file has 3 labels"
    ):
        custom_spec(colour_model, labels)

    result = run_cli(
        "predict",
        str(_solid(tmp_path, "r", (255, 0, 0))),
        "--model",
        str(colour_model),
        "--labels",
        str(labels),
    )
    assert_one_error_line(result, 1, "4 outputs", "3 labels")


def test_keras_model_with_a_lambda_layer_is_refused(tmp_path: Path) -> None:
    import keras

    marker = tmp_path / "lambda-ran"

    def side_effect(x):
        marker.touch()  # what a hostile Lambda would do when deserialised and run
        return x * 2.0

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(side_effect)(inputs)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(outputs))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    marker.unlink()  # building the model ran it once, here, on purpose

    with pytest.raises(InputError, match=r"lambda\.keras: cannot load this Keras model: .*Lambda"):
        custom_spec(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("model.pkl", b"x", "expected a model file ending in"),
        ("broken.tflite", b"\x00" * 100, "not a TFLite flatbuffer"),
        ("broken.keras", b"PK\x03\x04 not really a zip", "cannot load this Keras model"),
    ],
)
def test_unusable_model_files_are_refused(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)

    with pytest.raises(InputError, match=message):
        custom_spec(path)


@pytest.fixture(scope="module")
def logits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained CNN whose last layer has no softmax: it outputs logits."""
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(0, 3)),
        ]
    )
    path = tmp_path_factory.mktemp("logits") / "logits.keras"
    model.save(path)
    return path


@pytest.mark.slow
def test_logits_are_detected_from_the_graph_and_get_a_softmax(
    logits_model: Path, tmp_path: Path
) -> None:
    import keras

    spec = custom_spec(logits_model)
    photo = _solid(tmp_path, "mixed", (200, 120, 40))
    batch = preprocess(decode_image(photo), spec.preprocessing)
    raw = keras.saving.load_model(logits_model).predict(batch, verbose=0)[0]
    softmax = np.exp(raw - raw.max()) / np.exp(raw - raw.max()).sum()

    assert spec.outputs == "logits"
    np.testing.assert_allclose(
        load_runner(spec, Variant.ORIGINAL).predict(batch)[0], softmax, atol=1e-5
    )
    fp32 = ensure_variants(spec, [Variant.FP32])[Variant.FP32]
    copy = tmp_path / "logits.tflite"
    copy.write_bytes(fp32.read_bytes())
    tflite_spec = custom_spec(copy)
    assert tflite_spec.outputs == "logits"
    # Declared by the person, the kind wins over the graph's (the .tflite is checked in a
    # child without TensorFlow, so this costs no second Keras check).
    assert custom_spec(copy, outputs="probabilities").outputs == "probabilities"
    np.testing.assert_allclose(
        load_runner(tflite_spec, Variant.FP32).predict(batch)[0], softmax, atol=1e-4
    )


def test_a_model_ending_in_softmax_is_read_as_probabilities(colour_spec: ModelSpec) -> None:
    assert colour_spec.outputs == "probabilities"  # read from the graph: no outputs= given
