"""Decoding odd images, refusing broken ones, and the normalization modes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from inference import InputError, Variant, classify, decode_image, get_spec, preprocess
from inference.core.paths import SAMPLES_DIR
from inference.core.specs import Preprocessing
from inference.formats.images import (
    MAX_PIXELS,
    REDUCE_FROM_PIXELS,
    draft_size,
    normalize,
    prepare_image,
)
from tests.conftest import CAT_CLASSES, RunnerPool

SPEC = Preprocessing((224, 224), normalize="lite")
# JPEG re-encoding and colour conversions move pixel values by a few levels.
PIXEL_TOLERANCE = 8
# Box-reducing a big crop before the bicubic step moves a model input by at most this
# many pixel levels (Lite scaling: one level is 1/128); measured: 2 on 12 MP photos.
REDUCED_LEVELS_TOLERANCE = 3
NORMALIZE_MODES = ("lite", "tf", "torch", "caffe", "unit", "raw")


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cat(chelsea: Path) -> Image.Image:
    return Image.open(chelsea).convert("RGB")


def test_grayscale_becomes_three_equal_channels(cat: Image.Image) -> None:
    image = decode_image(_encode(cat.convert("L"), "PNG"))

    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 1], pixels[..., 2])


def test_transparent_pixels_become_white_not_black() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black

    pixels = np.asarray(decode_image(_encode(rgba, "PNG")))

    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[4, 4]) == (255, 0, 0)


def test_palette_with_transparency() -> None:
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    data = _encode(palette, "PNG", transparency=0)

    pixels = np.asarray(decode_image(data))

    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert tuple(pixels[4, 4]) == (0, 128, 0)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    ramp = (np.arange(64, dtype=np.uint16) * 1024).reshape(8, 8)  # 0 .. 64512
    data = _encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")

    pixels = np.asarray(decode_image(data))[..., 0].astype(int)

    np.testing.assert_allclose(pixels, np.rint(ramp / 257), atol=1)
    assert pixels.max() > 240 and len(np.unique(pixels)) == 64


def test_cmyk_jpeg(cat: Image.Image) -> None:
    data = _encode(cat.convert("CMYK"), "JPEG", quality=95)

    image = decode_image(data)

    assert image.mode == "RGB"
    difference = np.abs(np.asarray(image, int) - np.asarray(cat, int))
    assert np.median(difference) < PIXEL_TOLERANCE


def test_exif_rotated_photo_is_turned_upright(cat: Image.Image) -> None:
    # A phone stores the sensor image sideways and says so in EXIF:
    # orientation 6 means "rotate 90 degrees clockwise to display".
    sideways = cat.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(sideways, "JPEG", quality=95, exif=exif)

    image = decode_image(data)

    assert image.size == cat.size
    difference = np.abs(np.asarray(image, int) - np.asarray(cat, int))
    assert np.median(difference) < PIXEL_TOLERANCE


def test_exif_rotated_photo_is_classified_as_upright(
    runners: RunnerPool, cat: Image.Image, tmp_path: Path
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to display
    path = tmp_path / "phone.jpg"
    cat.transpose(Image.Transpose.ROTATE_270).save(path, quality=95, exif=exif)

    prediction = classify(runners.get("efficientnet_lite0", Variant.INT8), path, k=3)

    assert prediction.top_k[0].label in CAT_CLASSES


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(250, 0, 0), (0, 0, 250), (0, 250, 0)]]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)

    pixels = np.asarray(decode_image(data))

    assert pixels[8, 8, 0] > 200 and pixels[8, 8, 2] < 50


@pytest.mark.parametrize("size", [(1, 1), (3000, 3), (5, 2000)])
def test_tiny_and_extreme_aspect_ratios_fill_the_input(size: tuple[int, int]) -> None:
    image = Image.new("RGB", size, (10, 200, 30))

    batch = preprocess(decode_image(_encode(image, "PNG")), SPEC)

    assert batch.shape == (1, 224, 224, 3)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, 100, 100], (np.array([10, 200, 30]) - 127) / 128, atol=0.02)


def test_grayscale_model_gets_one_channel(cat: Image.Image) -> None:
    spec = Preprocessing((28, 28), normalize="unit", color_mode="L", crop_fraction=1.0)

    batch = preprocess(decode_image(_encode(cat, "PNG"), color_mode="L"), spec)

    assert batch.shape == (1, 28, 28, 1)
    assert batch.min() >= 0.0 and batch.max() <= 1.0


def test_central_crop_keeps_the_middle() -> None:
    # Left third red, middle green, right third blue: a square crop of a wide
    # image must be all green.
    stripes = np.zeros((100, 300, 3), np.uint8)
    stripes[:, :100, 0] = stripes[:, 100:200, 1] = stripes[:, 200:, 2] = 255

    fed = np.asarray(prepare_image(Image.fromarray(stripes), SPEC))

    assert fed.shape == (224, 224, 3)
    assert fed[..., 1].min() > 200 and fed[..., 0].max() < 30 and fed[..., 2].max() < 30


def test_jpeg_draft_decodes_big_photos_small(cat: Image.Image) -> None:
    big = _encode(cat.resize((4000, 3000)), "JPEG", quality=90)

    image = decode_image(big, min_size=(256, 256))

    assert min(image.size) >= 256
    assert image.size[0] < 4000 / 4  # decoded at a DCT scale, not at full size


def test_the_pipeline_draft_size_decodes_a_phone_photo_at_an_eighth(cat: Image.Image) -> None:
    pre = get_spec("efficientnet_lite0").preprocessing
    big = _encode(cat.resize((4000, 3000)), "JPEG", quality=90)

    image = decode_image(big, min_size=draft_size(pre))

    assert draft_size(pre) == (256, 256)  # 224 / 0.875: the crop keeps full resolution
    assert image.size == (500, 375)  # libjpeg's smallest scale, 1/8


def _fair(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """The preprocessing formula by hand: ImageOps.fit, float32, then the Lite scaling."""
    fitted = ImageOps.fit(
        image,
        spec.size[::-1],
        method=Image.Resampling.BICUBIC,
        bleed=(1 - spec.crop_fraction) / 2,
    )
    return ((np.asarray(fitted, dtype=np.float32) - 127.0) / 128.0)[None]


def test_sample_photos_are_preprocessed_exactly_as_the_formula() -> None:
    pre = get_spec("efficientnet_lite0").preprocessing
    for path in sorted(SAMPLES_DIR.glob("*.jpg")):
        image = decode_image(path)

        np.testing.assert_array_equal(preprocess(image, pre), _fair(image, pre), err_msg=path.name)


@pytest.mark.parametrize("mode", NORMALIZE_MODES)
def test_normalize_reads_uint8_pixels_as_their_float32_values(mode: str) -> None:
    pixels = np.random.default_rng(4).integers(0, 256, (5, 7, 3), dtype=np.uint8)

    from_bytes = normalize(pixels, mode)

    assert from_bytes.dtype == np.float32
    np.testing.assert_array_equal(from_bytes, normalize(pixels.astype(np.float32), mode))


def test_big_crops_keep_the_answer_of_fair_resampling(runners: RunnerPool) -> None:
    """A 12 MP picture (no JPEG draft to shrink it) is box-reduced before the bicubic step."""
    runner = runners.get("efficientnet_lite0", Variant.INT8)
    pre = runner.spec.preprocessing
    for path in sorted(SAMPLES_DIR.glob("*.jpg")):
        big = Image.open(path).convert("RGB").resize((4000, 3000), Image.Resampling.LANCZOS)
        assert (3000 * pre.crop_fraction) ** 2 >= REDUCE_FROM_PIXELS  # so it is reduced

        ours, fair = preprocess(big, pre), _fair(big, pre)

        assert 0 < np.abs(ours - fair).max() <= REDUCED_LEVELS_TOLERANCE / 128, path.name
        assert runner.predict(ours).argmax() == runner.predict(fair).argmax(), path.name


# --- invalid input: one clear message naming the file -----------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1024))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"hello, I am text pretending to be a JPEG\n", "not an image format"),
        (b"\x7fELF\x02\x01\x01" + bytes(100), "not an image format"),
    ],
    ids=["empty", "text", "executable"],
)
def test_invalid_files_are_refused_with_their_name(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=rf"^upload\.jpg: {message}"):
        decode_image(data, name="upload.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_images_are_refused(cat: Image.Image, fmt: str) -> None:
    data = _encode(cat, fmt)

    with pytest.raises(InputError, match="damaged or truncated"):
        decode_image(data[: len(data) // 2], name=f"cut.{fmt.lower()}")


@pytest.mark.parametrize("size", [(10_000, 9_000), (100_000, 100_000)], ids=["90MP", "10GP"])
def test_decompression_bomb_is_refused_before_decoding(size: tuple[int, int]) -> None:
    data = _png_header_claiming(*size)  # a few hundred bytes

    with pytest.raises(InputError, match=f"over {MAX_PIXELS / 1e6:.0f} megapixels are refused"):
        decode_image(data, name="bomb.png")


def test_missing_path() -> None:
    with pytest.raises(InputError, match="no such file"):
        decode_image(Path("/nonexistent/cat.jpg"))


# --- normalization matches Keras' own preprocess_input -------------------------------


@pytest.mark.parametrize(
    ("mode", "module"),
    [("tf", "mobilenet_v2"), ("caffe", "resnet50"), ("tf", "xception"), ("torch", "densenet")],
)
def test_normalize_matches_keras_preprocess_input(mode: str, module: str) -> None:
    import keras

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = getattr(keras.applications, module).preprocess_input(pixels.copy())

    np.testing.assert_allclose(normalize(pixels, mode), np.asarray(expected), rtol=1e-5, atol=1e-4)


def test_lite_normalization_is_minus_127_over_128() -> None:
    pixels = np.array([[0.0, 127.0, 255.0]], np.float32)

    np.testing.assert_allclose(normalize(pixels, "lite"), [[-127 / 128, 0.0, 1.0]])
