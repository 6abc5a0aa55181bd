"""Natural corruptions in the style of ImageNet-C, applied to the picture as the model sees it.

Hendrycks & Dietterich's ImageNet-C (ICLR 2019) corrupts the 224x224 crop a
model reads, at five severities. These are its parameters for the noises,
blurs, brightness, contrast, JPEG and pixelate, written with numpy and Pillow
alone: the reference code needs OpenCV, scikit-image and ImageMagick (Wand), and
the ``imagecorruptions`` package pulls in the first two; each operation here is
a few lines of the same arithmetic. Two more corruptions ask what the
deployment's resize does: the picture shown at a lower resolution and scaled
back with ``nearest`` against ``bilinear``.

Spatial parameters (blur radii) are ImageNet-C's for 224 pixels, scaled by the
model's input side, so a 28-pixel Fashion-MNIST input is blurred as much,
relative to its size, as a 224-pixel photo. Random corruptions draw from a
generator seeded by the image's name, the corruption and the severity: the same
image is corrupted the same way in this process, a worker or a Ray node.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from inference.core.errors import UsageError

__all__ = ["CORRUPTIONS", "SEVERITIES", "Corruption", "corrupt", "parse_corruptions"]

SEVERITIES = (1, 2, 3, 4, 5)
"""ImageNet-C's severities; 0 stands for the clean image in reports."""
_BASE_SIDE = 224
"""The input side ImageNet-C's spatial parameters are given for."""


@dataclass(frozen=True)
class Corruption:
    """One corruption at one severity (``severity`` 0: the clean image)."""

    name: str
    severity: int

    def __post_init__(self) -> None:
        if self.name not in CORRUPTIONS and not (self.name == "clean" and self.severity == 0):
            raise UsageError(
                f"Expected a corruption among {', '.join(CORRUPTIONS)}. Received: {self.name!r}"
            )
        if self.name != "clean" and self.severity not in SEVERITIES:
            raise UsageError(f"Expected a severity from 1 to 5. Received: {self.severity!r}")

    def apply(self, pixels: np.ndarray, key: str) -> np.ndarray:
        """``pixels`` (H x W x C uint8) corrupted; ``key`` (the image's name) seeds the noise."""
        if self.name == "clean":
            return pixels
        return corrupt(pixels, self.name, self.severity, key=key)


def _rng(name: str, severity: int, key: str) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(key.encode()), zlib.crc32(name.encode()), severity])


def _unit(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(pixels, np.float64) / 255.0


def gaussian_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return _unit(x) + rng.normal(size=x.shape, scale=c)


def shot_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (60, 25, 12, 5, 3)[s - 1]
    return rng.poisson(_unit(x) * c) / c


def impulse_noise(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # scikit-image's ``random_noise(mode="s&p", amount=c)``: a share ``c`` of the values,
    # each channel on its own, becomes 0 or 1 with equal odds.
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    out = _unit(x)
    hit = rng.random(x.shape) < c
    out[hit] = rng.random(int(hit.sum())) < 0.5
    return out


def _scaled(value: float, side: int) -> float:
    return value * side / _BASE_SIDE


def _shifted_sum(x: np.ndarray, taps: Sequence[tuple[int, int, float]]) -> np.ndarray:
    """Sum of ``weight * x`` shifted by (dy, dx), edges repeated: a small convolution.

    Written as shifted sums rather than an FFT because the kernels have at most a
    few hundred taps and edge replication is what the reference's OpenCV and
    ImageMagick calls do.
    """
    height, width = x.shape[:2]
    reach = max((max(abs(dy), abs(dx)) for dy, dx, _ in taps), default=0)
    padded = np.pad(x, ((reach, reach), (reach, reach), (0, 0)), mode="edge")
    out = np.zeros_like(x, dtype=np.float64)
    for dy, dx, weight in taps:
        out += weight * padded[reach + dy : reach + dy + height, reach + dx : reach + dx + width]
    return out


def _gaussian_1d(sigma: float, reach: int) -> np.ndarray:
    offsets = np.arange(-reach, reach + 1)
    weights = np.exp(-(offsets**2) / (2 * max(sigma, 1e-6) ** 2))
    return weights / weights.sum()


_SUBSAMPLES = 8
"""Samples per pixel side when the defocus disk's coverage of a pixel is measured."""


def defocus_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # A disk of the scaled radius, its edge softened by a small Gaussian ("alias blur").
    # Each tap weighs the share of its pixel the disk covers (8 x 8 samples), where the
    # reference cuts a hard disk: the same at 224 pixels but for the edge pixels, and on a
    # small input (radii under a pixel at 28) the five severities stay five blurs.
    radius, alias = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[s - 1]
    r = _scaled(radius, min(x.shape[:2]))
    reach = max(1, math.ceil(r)) + 1
    ys, xs = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    sub = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5
    sy = ys[..., None, None] + sub[:, None]
    sx = xs[..., None, None] + sub[None, :]
    disk = ((sx**2 + sy**2) <= r**2).mean(axis=(-2, -1))
    soft = _gaussian_1d(alias, 1)
    disk = np.apply_along_axis(np.convolve, 0, disk, soft, mode="same")
    disk = np.apply_along_axis(np.convolve, 1, disk, soft, mode="same")
    disk /= disk.sum()
    taps = [
        (int(dy), int(dx), float(w))
        for dy, dx, w in zip(ys.ravel(), xs.ravel(), disk.ravel(), strict=True)
        if w > 1e-9
    ]
    return _shifted_sum(_unit(x), taps)


def motion_blur(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # ImageMagick's motion blur as the reference calls it (imagecorruptions' port of it):
    # a one-sided line of taps with Gaussian weights, each output pixel gathering from
    # (+ceil(i sin - 1/2), +ceil(i cos - 1/2)), at a random angle within 45 degrees.
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[s - 1]
    side = min(x.shape[:2])
    radius, sigma = _scaled(radius, side), _scaled(sigma, side)
    angle = np.deg2rad(rng.uniform(-45, 45))
    width = max(1, round(2 * radius + 1))
    weights = np.exp(-(np.arange(width) ** 2) / (2 * max(sigma, 1e-6) ** 2))
    weights /= weights.sum()
    taps = [
        (math.ceil(i * math.sin(angle) - 0.5), math.ceil(i * math.cos(angle) - 0.5), w)
        for i, w in enumerate(weights.tolist())
    ]
    return _shifted_sum(_unit(x), taps)


def brightness(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    # HSV's value channel raised by c, hue and saturation kept (ImageNet-C's
    # rgb2hsv -> V + c -> hsv2rgb): each pixel's RGB scaled by (V + c) / V.
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]
    unit = _unit(x)
    value = unit.max(axis=-1, keepdims=True)
    raised = np.minimum(value + c, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(value > 0, unit * raised / value, raised)
    return scaled


def contrast(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[s - 1]
    unit = _unit(x)
    means = unit.mean(axis=(0, 1), keepdims=True)
    return (unit - means) * c + means


def _image(x: np.ndarray) -> Image.Image:
    return Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)


def _array(image: Image.Image, channels: int) -> np.ndarray:
    out = np.asarray(image, np.float64) / 255.0
    return out[..., None] if channels == 1 and out.ndim == 2 else out


def jpeg_compression(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    quality = (25, 18, 15, 10, 7)[s - 1]
    buffer = io.BytesIO()
    _image(x).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as reopened:
        return _array(reopened.convert(_image(x).mode), x.shape[-1])


def _down_up(x: np.ndarray, factor: float, method: Image.Resampling) -> np.ndarray:
    height, width = x.shape[:2]
    small = (max(1, int(width * factor)), max(1, int(height * factor)))
    image = _image(x).resize(small, method).resize((width, height), method)
    return _array(image, x.shape[-1])


def pixelate(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return _down_up(x, (0.6, 0.5, 0.4, 0.3, 0.25)[s - 1], Image.Resampling.BOX)


_RESIZE_FACTORS = (0.75, 0.6, 0.5, 0.4, 0.3)
"""How small the picture is shown before it is scaled back, by severity."""


def resize_nearest(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return _down_up(x, _RESIZE_FACTORS[s - 1], Image.Resampling.NEAREST)


def resize_bilinear(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    return _down_up(x, _RESIZE_FACTORS[s - 1], Image.Resampling.BILINEAR)


_FUNCTIONS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "brightness": brightness,
    "contrast": contrast,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
    "resize_nearest": resize_nearest,
    "resize_bilinear": resize_bilinear,
}
CORRUPTIONS = tuple(_FUNCTIONS)
"""Every corruption's name, in report order."""


def corrupt(pixels: np.ndarray, name: str, severity: int, *, key: str = "") -> np.ndarray:
    """``pixels`` (H x W x C uint8, C 1 or 3) under corruption ``name`` at ``severity`` 1-5.

    Returns uint8 of the same shape, rounded as a saved corrupted image would be.

    Raises:
        UsageError: Unknown corruption or a severity outside 1-5.
    """
    Corruption(name, severity)  # validates
    pixels = np.asarray(pixels, np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    unit = _FUNCTIONS[name](pixels, severity, _rng(name, severity, key))
    return np.clip(np.rint(np.clip(unit, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)


def parse_corruptions(
    corruptions: str | Sequence[str] | None, severities: str | Sequence[int] | None
) -> list[Corruption]:
    """The clean image then every (corruption, severity) asked for: ``"a,b"`` and ``"1,3,5"``.

    Empty or ``None`` means all corruptions, or all severities.

    Raises:
        UsageError: An unknown corruption or severity, one line.
    """
    names = _split(corruptions) or list(CORRUPTIONS)
    try:
        levels = [int(s) for s in _split(severities)] or list(SEVERITIES)
    except ValueError:
        raise UsageError(
            f"Expected severities as whole numbers 1-5, like 1,3,5. Received: {severities!r}"
        ) from None
    conditions = [Corruption("clean", 0)]
    conditions += [Corruption(n, s) for n in dict.fromkeys(names) for s in sorted(set(levels))]
    return conditions


def _split(value: str | Sequence[object] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [item.strip() for item in items if item.strip()]
