"""Where each variant looks: forward-only saliency maps, and how far two variants' maps agree.

Quantization can keep a model's answer while moving the evidence it rests on. A map shows
that evidence for one class from forward passes alone, so every variant, int8 included, is
explained the same way: occlusion (Zeiler and Fergus 2014) hides one square at a time and
records the class's probability drop; RISE (Petsiuk et al. 2018) averages random soft masks
weighted by the probability each leaves. :func:`explain` gives every variant's map of one
class, :func:`top_region_iou` and :func:`pairs` compare them, :func:`overlay` and
:func:`difference` draw them.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from inference.core.errors import InputError, UsageError
from inference.core.specs import AnyVariant, Category, ModelSpec
from inference.engine.runners import Runner
from inference.formats.images import normalize, prepare_image

__all__ = [
    "METHODS",
    "SaliencyMap",
    "SaliencyOptions",
    "difference",
    "explain",
    "overlay",
    "pairs",
    "top_region_iou",
    "validate",
]

METHODS = ("occlusion", "rise")
"""The ways a map can be computed; both need forward passes only."""

# matplotlib is not a dependency, and not worth one for two colour scales: maps are coloured
# by tables interpolated from anchor colours, viridis (perceptually uniform, readable in grey
# and by colour-blind eyes) at nine points, and ColorBrewer's RdBu with white at zero.
_VIRIDIS = "#440154 #472d7b #3b528b #2c728e #21918c #28ae80 #5ec962 #addc30 #fde725"
_BLUE_WHITE_RED = "#2166ac #67a9cf #ffffff #ef8a62 #b2182b"
_TABLE_SIZE = 257


@dataclass(frozen=True)
class SaliencyOptions:
    """How :func:`explain` computes a map."""

    method: str = "occlusion"
    """``"occlusion"`` (a sliding square) or ``"rise"`` (random soft masks)."""
    patch: int | None = None
    """Occlusion: side of the hidden square in model-input pixels (default
    ``round(min(H, W) / 7)``, 32 for a 224 x 224 input)."""
    stride: int | None = None
    """Occlusion: step between squares (default ``patch // 2``); at most ``patch``, so
    every pixel is hidden at least once."""
    masks: int = 500
    """RISE: number of random masks (forward passes)."""
    cells: int = 7
    """RISE: each mask is a ``cells x cells`` binary grid, upsampled to the input."""
    keep: float = 0.5
    """RISE: probability that a grid cell shows the image."""
    seed: int = 0
    """RISE: seed of the masks; every variant gets the same masks."""
    batch: int = 32
    """Hidden or masked inputs per ``predict`` call, which bounds memory."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(
                f"Expected method to be one of {set(METHODS)}. Received: method={self.method!r}"
            )
        for name in ("patch", "stride", "masks", "cells", "batch"):
            value = getattr(self, name)
            if value is None and name in ("patch", "stride"):
                continue
            if not isinstance(value, int | np.integer) or value < 1:
                raise UsageError(
                    f"Expected {name} to be a positive integer. Received: {name}={value!r}"
                )
        if self.patch is not None and self.stride is not None:
            _check_stride(self.patch, self.stride)
        if not 0.0 < self.keep <= 1.0:
            raise UsageError(f"Expected keep to be in (0, 1]. Received: keep={self.keep!r}")


@dataclass(frozen=True)
class SaliencyMap:
    """One variant's evidence for one class, over the image as the model sees it."""

    variant: AnyVariant
    method: str
    target: Category
    """The class explained (the same for every variant of one :func:`explain` call)."""
    score: float
    """The target's probability on the whole, unhidden image, for this variant."""
    saliency: np.ndarray
    """``(H, W)`` float32. Occlusion: the mean drop of the target's probability when a square
    over the pixel is hidden. RISE: the mean of the masks weighted by the probability each
    leaves, over ``keep`` (about the masked inputs' mean probability where nothing matters)."""
    seconds: float
    evaluations: int
    """Forward passes it took, the unhidden image's included."""

    @property
    def peak(self) -> tuple[int, int]:
        """(row, column) of the largest value (the first one on ties)."""
        row, col = np.unravel_index(int(np.argmax(self.saliency)), self.saliency.shape)
        return int(row), int(col)

    def as_dict(self, decimals: int = 4) -> dict[str, object]:
        """A JSON-ready dict; ``saliency`` is a list of rows, rounded to ``decimals``."""
        return {
            "variant": self.variant.value,
            "method": self.method,
            "class": self.target.index,
            "label": self.target.label,
            "score": round(self.score, 6),
            "saliency": np.round(self.saliency.astype(np.float64), decimals).tolist(),
            "peak": list(self.peak),
            "seconds": round(self.seconds, 4),
            "evaluations": self.evaluations,
        }


def explain(
    spec: ModelSpec,
    runners: Mapping[AnyVariant, Runner],
    image: Image.Image,
    *,
    target: int | None = None,
    options: SaliencyOptions | None = None,
) -> list[SaliencyMap]:
    """Every variant's saliency map of one class on one decoded image, in ``runners``' order.

    All variants explain the same class, so their maps are comparable: ``target``
    if given, else the top-1 class of the first runner (normally the float one) on
    the whole image. A map of each variant's own top-1 would compare evidence for
    different things whenever quantization changes the answer.

    Args:
        spec: The model; its preprocessing crops, resizes and normalizes the image.
        runners: The variants to explain; the first one picks the class.
        image: A decoded image (:func:`inference.formats.images.decode_image`).
        target: A class index to explain instead of the first runner's top-1.
        options: Method and its parameters (default: occlusion, 32-pixel squares at 224).

    Raises:
        UsageError: No runners, or options or a target the model cannot take (:func:`validate`).
    """
    options = options or SaliencyOptions()
    validate(spec, options, target)
    if not runners:
        raise UsageError("Expected at least one variant to explain. Received: runners={}")
    pre = spec.preprocessing
    pixels = np.asarray(prepare_image(image, pre))  # uint8, exactly what the model sees
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    clean = normalize(pixels, pre.normalize)[None]
    if target is None:
        target = int(np.argmax(next(iter(runners.values())).predict(clean)[0]))
    label, occlusion = spec.labels[target], options.method == "occlusion"
    maps = []
    for variant, runner in runners.items():
        start = time.perf_counter()
        score = float(runner.predict(clean)[0, target])
        method = _occlusion if occlusion else _rise
        values, passes = method(runner, pixels, pre.normalize, target, options)
        saliency = (score - values if occlusion else values).astype(np.float32)
        maps.append(
            SaliencyMap(
                variant=variant,
                method=options.method,
                target=Category(target, label, score),
                score=score,
                saliency=saliency,
                seconds=time.perf_counter() - start,
                evaluations=passes + 1,
            )
        )
    return maps


def validate(spec: ModelSpec, options: SaliencyOptions, target: int | None = None) -> None:
    """Check ``options`` and ``target`` against the model, before any runner is loaded.

    Raises:
        UsageError: A patch larger than the input, or a target outside the classes.
    """
    if options.method == "occlusion":
        _occlusion_geometry(options, spec.input_size)
    if target is not None and not 0 <= target < spec.num_classes:
        raise UsageError(
            f"Expected target to be a class index in [0, {spec.num_classes}). "
            f"Received: target={target}"
        )


def _occlusion_geometry(options: SaliencyOptions, size: tuple[int, int]) -> tuple[int, int]:
    """The (patch, stride) for an input of ``size``, defaults filled in and checked."""
    side = min(size)
    patch = options.patch if options.patch is not None else max(1, round(side / 7))
    if patch > side:
        raise UsageError(
            f"Expected patch to be at most the model input's shorter side ({side}). "
            f"Received: patch={patch}"
        )
    stride = options.stride if options.stride is not None else max(1, patch // 2)
    _check_stride(patch, stride)
    return patch, stride


def _check_stride(patch: int, stride: int) -> None:
    if stride > patch:
        raise UsageError(
            "Expected stride to be at most patch, so that every pixel is hidden. "
            f"Received: stride={stride}, patch={patch}"
        )


def _starts(length: int, patch: int, stride: int) -> list[int]:
    """Where squares start along one axis; a last one sits flush with the far edge."""
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] + patch < length:  # the remainder no stride reached
        starts.append(length - patch)
    return starts


def _occlusion(
    runner: Runner, pixels: np.ndarray, mode: str, target: int, options: SaliencyOptions
) -> tuple[np.ndarray, int]:
    """The target's mean probability over the hidden squares covering each pixel.

    :func:`explain` takes it from the unhidden score: the mean drop is the drop of the mean.
    """
    patch, stride = _occlusion_geometry(options, pixels.shape[:2])
    height, width, channels = pixels.shape
    # The hidden square takes the image's own mean colour: black or grey would paint a new
    # edge and a new object into the picture, and the drop would measure the paint too.
    fill = np.rint(pixels.reshape(-1, channels).mean(axis=0)).astype(np.uint8)
    rows, cols = _starts(height, patch, stride), _starts(width, patch, stride)
    positions = list(itertools.product(rows, cols))
    total, count = np.zeros((height, width)), np.zeros((height, width), np.int64)
    for first in range(0, len(positions), options.batch):
        chunk = positions[first : first + options.batch]
        hidden = np.repeat(pixels[None], len(chunk), axis=0)
        for k, (row, col) in enumerate(chunk):
            hidden[k, row : row + patch, col : col + patch] = fill
        scores = runner.predict(normalize(hidden, mode))[:, target].astype(np.float64)
        for (row, col), value in zip(chunk, scores, strict=True):
            total[row : row + patch, col : col + patch] += value
            count[row : row + patch, col : col + patch] += 1
    return total / count, len(positions)


def _rise(
    runner: Runner, pixels: np.ndarray, mode: str, target: int, options: SaliencyOptions
) -> tuple[np.ndarray, int]:
    """RISE: ``sum_i p_i M_i / (N keep)``, less the masks' own sampling noise.

    As ``p + sum_i (p_i - p) M_i / (N keep)``, ``p`` the mean ``p_i``: the same expectation
    (``E[M] = keep``) without ``p (sum_i M_i / (N keep) - 1)``, pure noise of the masks. At
    300 masks on Lite0 that term moved the peak off the object for some seeds and, the masks
    being shared, made two variants' maps agree through the noise alone.
    """
    mean = pixels.reshape(-1, pixels.shape[-1]).mean(axis=0).astype(np.float32)
    offset = pixels.astype(np.float32) - mean
    weighted, coverage, total = np.zeros(pixels.shape[:2]), np.zeros(pixels.shape[:2]), 0.0
    for masks in _rise_masks(pixels.shape[:2], options):
        # image * M + mean * (1 - M): hidden parts fade to the mean colour (see _occlusion).
        masked = offset * masks[..., None]
        masked += mean
        scores = runner.predict(normalize(masked, mode))[:, target].astype(np.float64)
        weighted += np.tensordot(scores, masks, axes=1)
        coverage += masks.sum(axis=0)
        total += float(scores.sum())
    n, average = options.masks * options.keep, total / options.masks
    return average + (weighted - average * coverage) / n, options.masks


def _rise_masks(size: tuple[int, int], options: SaliencyOptions) -> Iterator[np.ndarray]:
    """The RISE masks in batches of ``options.batch``, each ``(n, H, W)`` float32 in [0, 1].

    Drawn mask by mask from a fresh generator of ``options.seed``, so every variant
    and every batch size gets the same masks, without holding them all (500 masks of
    224 x 224 are 100 MB).
    """
    height, width = size
    cells = options.cells
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    up = ((cells + 1) * cell_w, (cells + 1) * cell_h)  # Pillow sizes are (width, height)
    rng = np.random.default_rng(options.seed)
    for first in range(0, options.masks, options.batch):
        n = min(options.batch, options.masks - first)
        batch = np.empty((n, height, width), np.float32)
        for k in range(n):
            grid = (rng.random((cells, cells)) < options.keep).astype(np.float32)
            dy, dx = int(rng.integers(0, cell_h)), int(rng.integers(0, cell_w))
            smooth = np.asarray(Image.fromarray(grid).resize(up, Image.Resampling.BILINEAR))
            batch[k] = smooth[dy : dy + height, dx : dx + width]
        yield batch


def top_region_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> float:
    """Intersection over union of the top ``fraction`` of two maps.

    Each map's region is every pixel at or above its ``ceil(fraction * n)``-th largest
    value: a plateau at the threshold is taken whole, never cut by position (an int8
    map's probabilities come in steps, so its drops tie often). Where that value is the
    map's floor (a map flat over more than ``1 - fraction`` of the image), only what
    stands above the floor counts; two maps with nothing above their floors agree (1.0).

    Raises:
        InputError: The maps differ in shape, or ``fraction`` is not in (0, 1].
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.size == 0:
        raise InputError(
            f"Expected two non-empty maps of one shape. Received: {a.shape} and {b.shape}"
        )
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"Expected fraction to be in (0, 1]. Received: fraction={fraction!r}")
    top_a, top_b = _top_region(a, fraction), _top_region(b, fraction)
    union = int(np.count_nonzero(top_a | top_b))
    return 1.0 if union == 0 else int(np.count_nonzero(top_a & top_b)) / union


def _top_region(values: np.ndarray, fraction: float) -> np.ndarray:
    """The pixels of :func:`top_region_iou`'s region, as a flat boolean mask."""
    flat = values.ravel()
    # Rounded first: 0.1 * 30 is 3.0000000000000004, whose ceiling would be 4.
    k = math.ceil(round(fraction * flat.size, 9))
    threshold = np.partition(flat, flat.size - k)[flat.size - k]
    if threshold <= flat.min():
        return flat > threshold
    return flat >= threshold


def pairs(maps: Sequence[SaliencyMap]) -> list[dict[str, object]]:
    """The first map (the reference, normally the float variant) against each other map.

    Each row: ``reference`` and ``variant`` (names), ``iou_top10`` (:func:`top_region_iou`
    of the top tenth) and ``peak_distance`` (pixels between the two peaks).
    """
    if not maps:
        return []
    reference = maps[0]
    return [
        {
            "reference": reference.variant.value,
            "variant": other.variant.value,
            "iou_top10": top_region_iou(reference.saliency, other.saliency),
            "peak_distance": math.dist(reference.peak, other.peak),
        }
        for other in maps[1:]
    ]


def overlay(picture: Image.Image, saliency: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``saliency`` in viridis, scaled by its own range, blended over ``picture`` (RGB).

    A map of another size than the picture is resized to it (bilinear).
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"Expected alpha to be in [0, 1]. Received: alpha={alpha!r}")
    base = np.asarray(picture.convert("RGB"), np.float32)
    values = np.asarray(saliency, np.float32)
    if values.shape != picture.size[::-1]:
        values = np.asarray(Image.fromarray(values).resize(picture.size, Image.Resampling.BILINEAR))
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    colours = _colour(scaled, _VIRIDIS).astype(np.float32)
    blended = (1.0 - alpha) * base + alpha * colours
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")


def difference(a: np.ndarray, b: np.ndarray, reach: float | None = None) -> Image.Image:
    """``a - b`` in blue-white-red on a range symmetric about zero: red where ``a`` is larger.

    White is exactly zero; a difference of ``reach`` either way takes the full colour
    (default: the reference map's own largest magnitude, so a near-copy stays near
    white instead of being stretched to full colour by its own tiny differences).

    Raises:
        InputError: The maps differ in shape.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"Expected two 2-D maps of one shape. Received: {a.shape} and {b.shape}")
    delta = a - b
    if reach is None:
        reach = float(np.abs(a).max()) or float(np.abs(delta).max())
    unit = (
        (np.clip(delta / reach, -1.0, 1.0) + 1.0) / 2.0 if reach > 0 else np.full(delta.shape, 0.5)
    )
    return Image.fromarray(_colour(unit, _BLUE_WHITE_RED), "RGB")


def _colour(unit: np.ndarray, anchors: str) -> np.ndarray:
    """Values in [0, 1] as uint8 RGB, from a table interpolated between evenly spaced anchors.

    The table has an odd number of entries, so 0.5 (a difference of zero) is one of them.
    """
    rgb = np.array([list(bytes.fromhex(a.lstrip("#"))) for a in anchors.split()], np.uint8)
    stops, levels = np.linspace(0.0, 1.0, len(rgb)), np.linspace(0.0, 1.0, _TABLE_SIZE)
    table = np.rint([np.interp(levels, stops, channel) for channel in rgb.T]).T.astype(np.uint8)
    index = np.rint(np.clip(np.nan_to_num(unit), 0.0, 1.0) * (_TABLE_SIZE - 1)).astype(np.intp)
    return table[index]
