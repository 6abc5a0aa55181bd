"""``predict``: classify image files with one or more variants of a model.

It runs the one :class:`inference.pipeline.Pipeline` every front end uses and
prints a line per image and variant (time and top-k), or with ``--json`` one
:meth:`inference.core.specs.Prediction.as_dict` object per image and variant.
An image that cannot be decoded is reported on stderr and the others still run
(exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.cli.common import (
    Subcommands,
    add_command,
    json_argument,
    model_arguments,
    positive_int,
    print_json,
    progress,
    resolve_model,
)
from inference.core.errors import InputError
from inference.core.specs import Variant
from inference.pipeline import Pipeline, PipelineOptions


def register(subcommands: Subcommands) -> None:
    parser = add_command(subcommands, "predict", help="classify images")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    model_arguments(parser)
    parser.add_argument(
        "--variant",
        default=None,
        help="original, fp32, fp16, dynamic, int8, a comma list, or 'all' (default: int8)",
    )
    parser.add_argument("--top-k", type=positive_int, default=5, help="classes to show (default 5)")
    parser.add_argument("--threads", type=positive_int, default=None, help="LiteRT threads")
    json_argument(parser)


def run(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    default = (Variant.INT8,) if Variant.INT8 in spec.variants else spec.variants[:1]
    variants = args.variant if args.variant is not None else default
    options = PipelineOptions(top_k=args.top_k, threads=args.threads, progress=progress)
    pipeline = Pipeline(spec, variants, options=options)
    images = [Path(p) for p in args.images]
    for path in images:  # fail fast, before any model loads
        if not path.is_file():
            raise InputError(f"{path}: no such file; expected a path to an image")

    results = []
    failed = False
    with pipeline:
        for path in images:
            try:
                results.extend(pipeline(path, name=str(path)))
            except InputError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed = True
    if args.json:
        print_json([r.as_dict() for r in results])
    else:
        width = max([8, *(len(v.value) for v in pipeline.variants)])
        for result in results:
            classes = "  ".join(f"{c.label} {c.score:.1%}" for c in result.top_k)
            print(
                f"{result.image}  {result.model} {result.variant.value:<{width}} "
                f"{result.timing.total:7.1f} ms  {classes}"
            )
    return 1 if failed else 0
