"""Decode any image a person might upload and turn it into a model input.

One path serves every model and variant: ``decode_image`` (bytes or path to an
upright RGB/L Pillow image) then ``preprocess`` (central crop, resize,
normalize) driven by the model's :class:`~inference.core.specs.Preprocessing`.

Normalization is written in NumPy rather than calling Keras'
``preprocess_input`` so that TFLite variants run without importing TensorFlow;
tests check each mode against Keras' own function.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inference.core.errors import InputError
from inference.core.specs import Preprocessing

__all__ = [
    "IMAGE_SUFFIXES",
    "IMAGE_TYPES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_MB",
    "MAX_PIXELS",
    "decode_image",
    "image_files",
    "normalize",
    "prepare_image",
    "preprocess",
]

MAX_PIXELS = 80_000_000
"""Largest image accepted (80 megapixels); checked from the header, before decoding."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif")
"""File name endings read as images, in folders and uploads."""
IMAGE_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]
MAX_IMAGE_MB = 25
"""Largest image file accepted, in MB of 1,000,000 bytes (pages and API alike)."""
MAX_IMAGE_BYTES = MAX_IMAGE_MB * 1_000_000

_IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
REDUCING_GAP = 3.0
"""Crops of :data:`REDUCE_FROM_PIXELS` or more are first shrunk by a whole factor (a box
filter), leaving at least this much to the bicubic/bilinear step: Pillow's
``reducing_gap``, which it documents as indistinguishable from fair resampling at 3."""
REDUCE_FROM_PIXELS = 1_000_000
"""Below a megapixel the resize costs at most a few milliseconds and stays exactly as it
was (so does every JPEG, decoded at draft size); a 12 MP PNG's crop took 36 ms, 10 reduced."""
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}

ImageSource = bytes | str | Path | BinaryIO


def decode_image(
    source: ImageSource,
    *,
    name: str | None = None,
    color_mode: str = "RGB",
    min_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Read an image and return it upright, in ``color_mode``, fully loaded.

    Handles EXIF orientation, transparency (composited on white), palette,
    grayscale, 16-bit and CMYK images, and animations (first frame).

    Args:
        source: Encoded bytes, a path, or a binary file object.
        name: How to name the image in error messages (default: the path).
        color_mode: ``"RGB"`` or ``"L"``.
        min_size: If given, JPEGs are decoded at the smallest DCT scale that
            still covers this (width, height), which is several times faster
            for phone photos.

    Raises:
        InputError: The data is empty, not an image, truncated, or larger
            than :data:`MAX_PIXELS`.
    """
    label = name or (str(source) if isinstance(source, str | Path) else "image")
    if isinstance(source, bytes):
        if not source:
            raise InputError(f"{label}: the file is empty; expected an image")
        source = io.BytesIO(source)
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{label}: no such file; expected a path to an image")
        if path.stat().st_size == 0:
            raise InputError(f"{label}: the file is empty; expected an image")
    try:
        with warnings.catch_warnings():
            # Pillow warns (or raises, past twice its global limit) about bombs; our
            # own limit below is lower and explicit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(source)
        with opened:
            width, height = opened.size
            if width * height > MAX_PIXELS:
                raise _too_large(label, width, height)
            if min_size is not None and opened.format == "JPEG":
                opened.draft("L" if color_mode == "L" else "RGB", min_size)
            opened.seek(0)  # first frame of an animation
            opened.load()
            upright = ImageOps.exif_transpose(opened)  # always a new image
        return _to_mode(upright, color_mode)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(
            f"{label}: the header claims a huge image; images over "
            f"{MAX_PIXELS / 1e6:.0f} megapixels are refused"
        ) from None
    except UnidentifiedImageError:
        raise InputError(
            f"{label}: not an image format Pillow can read (expected JPEG, PNG, GIF, WebP, "
            "BMP, TIFF, ...)"
        ) from None
    except Exception as exc:  # Pillow's decoders raise many types on malformed data
        raise InputError(
            f"{label}: the image data is damaged or truncated ({type(exc).__name__}: {exc})"
        ) from None


def image_files(folder: Path, *, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (by suffix), sorted; sub-folders too if ``recursive``."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _too_large(label: str, width: int, height: int) -> InputError:
    return InputError(
        f"{label}: {width}x{height} is {width * height / 1e6:.0f} megapixels; "
        f"images over {MAX_PIXELS / 1e6:.0f} megapixels are refused"
    )


def _to_mode(image: Image.Image, color_mode: str) -> Image.Image:
    """Convert any Pillow mode to RGB or L without clipping or black backgrounds."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in {"I", "F"}:
        # Pillow's convert() clips 16-bit values at 255; scale them instead.
        values = np.asarray(image, dtype=np.float32).copy()  # in place below: one buffer
        if image.mode in _SIXTEEN_BIT_MODES or values.max(initial=0) > 255:
            values /= 257.0
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values *= 255.0
        np.rint(values, out=values)
        np.clip(values, 0, 255, out=values)
        image = Image.fromarray(values.astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != color_mode:
        image = image.convert(color_mode)
    return image


def prepare_image(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Central crop and resize: the picture exactly as the model will see it."""
    if image.mode != spec.color_mode:
        image = _to_mode(image, spec.color_mode)
    height, width = spec.size
    box = _central_box(image.size, (width, height), (1.0 - spec.crop_fraction) / 2.0)
    if box is None:
        return Image.new(image.mode, (width, height))
    big = (box[2] - box[0]) * (box[3] - box[1]) >= REDUCE_FROM_PIXELS
    return image.resize(
        (width, height),
        _RESAMPLE[spec.resample],
        box=box,
        reducing_gap=REDUCING_GAP if big else None,
    )


def _central_box(
    size: tuple[int, int], target: tuple[int, int], bleed: float
) -> tuple[float, float, float, float] | None:
    """The centred box of ``target``'s aspect ratio in ``size``, less ``bleed`` at each edge.

    ``ImageOps.fit``'s own arithmetic, so its pixels when nothing is reduced
    (fit takes no ``reducing_gap``). None when nothing is left, where fit
    returns a black image.
    """
    bleed_x, bleed_y = bleed * size[0], bleed * size[1]
    live_w, live_h = size[0] - bleed_x * 2, size[1] - bleed_y * 2
    if live_h == 0:
        return None
    live_ratio, output_ratio = live_w / live_h, target[0] / target[1]
    if live_ratio == output_ratio:
        crop_w, crop_h = live_w, live_h
    elif live_ratio >= output_ratio:
        crop_w, crop_h = output_ratio * live_h, live_h
    else:
        crop_w, crop_h = live_w, live_w / output_ratio
    left = bleed_x + (live_w - crop_w) * 0.5
    top = bleed_y + (live_h - crop_h) * 0.5
    return (left, top, left + crop_w, top + crop_h)


def normalize(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Scale pixels in [0, 255] (``..., C``; uint8 or float) the way ``mode`` prescribes.

    Computed in float32 from the first operation, into one new array: the
    same values as converting to float32 first, without the extra copies.
    """
    f32 = np.float32
    if mode == "lite":
        x = np.subtract(pixels, 127.0, dtype=f32)
        x /= 128.0
    elif mode == "tf":
        x = np.divide(pixels, 127.5, dtype=f32)
        x -= 1.0
    elif mode == "torch":
        # Not in place: a one-channel input broadcasts against the RGB mean, as before.
        x = np.subtract(np.divide(pixels, 255.0, dtype=f32), _IMAGENET_MEAN_RGB)
        x /= _IMAGENET_STD_RGB
    elif mode == "caffe":
        x = np.subtract(np.asarray(pixels)[..., ::-1], _CAFFE_MEAN_BGR, dtype=f32)
    elif mode == "unit":
        x = np.divide(pixels, 255.0, dtype=f32)
    elif mode == "raw":
        x = np.array(pixels, dtype=f32)
    else:
        raise ValueError(f"expected a normalize mode; received {mode!r}")
    return x


def preprocess(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """Turn a decoded image into a ``(1, H, W, C)`` float32 batch."""
    pixels = np.asarray(prepare_image(image, spec))  # uint8: float32 comes once, in normalize
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return normalize(pixels, spec.normalize)[None]


def draft_size(spec: Preprocessing) -> tuple[int, int]:
    """Smallest decode size that keeps the central crop at full model resolution."""
    side = math.ceil(max(spec.size) / spec.crop_fraction)
    return (side, side)
