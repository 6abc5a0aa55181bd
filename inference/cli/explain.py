"""``explain``: where each variant looks, as forward-only saliency maps of one class.

For every image, each variant's map of the same class (the first variant's top-1, or
``--target``) is computed by occlusion or RISE (:mod:`inference.analysis.saliency`),
and compared with the first variant's by the IoU of their top tenth. It prints a table,
or with ``--json`` one record per image and variant:
``{"image", "model", **SaliencyMap.as_dict(), "iou_top10"}`` (``null`` for the first
variant). ``--save DIR`` writes each map over the picture the model saw, and the first
variant's map minus each other's. An image that cannot be decoded is reported on stderr
and the others still run (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from inference.analysis.saliency import (
    METHODS,
    SaliencyMap,
    SaliencyOptions,
    difference,
    explain,
    overlay,
    pairs,
    validate,
)
from inference.cli.common import (
    Subcommands,
    add_command,
    json_argument,
    model_arguments,
    positive_int,
    progress,
    render,
    resolve_model,
)
from inference.core.errors import InputError
from inference.formats.images import prepare_image
from inference.pipeline import Pipeline, PipelineOptions

DEFAULT_VARIANTS = "fp32,int8"


def register(subcommands: Subcommands) -> None:
    parser = add_command(
        subcommands, "explain", help="saliency maps: where each variant looks for one class"
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    model_arguments(parser)
    parser.add_argument(
        "--variant",
        default=DEFAULT_VARIANTS,
        help="a comma list of variants; the first one is the reference and picks the class "
        f"(default: {DEFAULT_VARIANTS})",
    )
    parser.add_argument("--method", choices=METHODS, default="occlusion", help="default: occlusion")
    # Plain ints: SaliencyOptions checks them and says what it expected.
    parser.add_argument(
        "--patch",
        type=int,
        default=None,
        help="occlusion square in model-input pixels (default: the input's shorter side / 7)",
    )
    parser.add_argument("--stride", type=int, default=None, help="default: patch // 2")
    parser.add_argument("--masks", type=int, default=500, help="RISE masks (default 500)")
    parser.add_argument(
        "--target",
        type=int,
        default=None,
        metavar="CLASS_INDEX",
        help="class to explain (default: the first variant's top-1)",
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="LiteRT threads")
    parser.add_argument(
        "--save", type=Path, default=None, metavar="DIR", help="write overlays and differences"
    )
    json_argument(parser)


def run(args: argparse.Namespace) -> int:
    options = SaliencyOptions(
        method=args.method, patch=args.patch, stride=args.stride, masks=args.masks
    )
    spec = resolve_model(args)
    validate(spec, options, args.target)
    pipeline = Pipeline(
        spec, args.variant, options=PipelineOptions(threads=args.threads, progress=progress)
    )
    images = [Path(p) for p in args.images]
    for path in images:  # fail fast, before any model loads
        if not path.is_file():
            raise InputError(f"{path}: no such file; expected a path to an image")

    results: list[tuple[str, SaliencyMap, float | None]] = []
    failed = False
    with pipeline:
        runners = pipeline.runners()
        ordered = {v: runners[v] for v in pipeline.variants}
        for path in images:
            try:
                image = pipeline.decode(path, name=str(path))
            except InputError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed = True
                continue
            maps = explain(pipeline.spec, ordered, image, target=args.target, options=options)
            ious = [None] + [row["iou_top10"] for row in pairs(maps)]
            results.extend((str(path), m, iou) for m, iou in zip(maps, ious, strict=True))
            if args.save is not None:
                seen = prepare_image(image, pipeline.spec.preprocessing)
                _save(args.save, path.stem, seen, maps)
    if args.json:
        records = [
            {"image": name, "model": spec.name, **m.as_dict(), "iou_top10": iou}
            for name, m, iou in results
        ]
        # Compact: each record holds H x W numbers, which an indent would put one per line.
        print(json.dumps(records))
    elif results:
        print(render([_row(*result) for result in results], "markdown"))
    return 1 if failed else 0


def _row(image: str, saliency: SaliencyMap, iou: float | None) -> dict[str, object]:
    """One line of the table: the map's summary, not the map."""
    row, col = saliency.peak
    return {
        "image": image,
        "variant": saliency.variant.value,
        "class": f"{saliency.target.index} {saliency.target.label}",
        "score": round(saliency.score, 4),
        "peak (row, col)": f"{row}, {col}",
        "iou_top10": None if iou is None else round(iou, 3),
        "seconds": round(saliency.seconds, 2),
    }


def _save(folder: Path, stem: str, picture: Image.Image, maps: list[SaliencyMap]) -> None:
    """``<stem>-<variant>.png`` overlays and ``<stem>-<ref>-minus-<variant>.png`` differences."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = maps[0]
    for m in maps:
        overlay(picture, m.saliency).save(folder / f"{stem}-{m.variant.value}.png")
        if m is not reference:
            name = f"{stem}-{reference.variant.value}-minus-{m.variant.value}.png"
            difference(reference.saliency, m.saliency).save(folder / name)
