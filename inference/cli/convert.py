"""``convert``: build a model's TFLite variants into the conversion cache ahead of use.

It prints one line per variant (size and path), or with ``--json`` a list of
``{"model", "variant", "path", "bytes", "seconds"}`` objects, ``seconds`` being
how long the file took to make (from its cache sidecar; ``null`` if unknown).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inference.cli.common import (
    Subcommands,
    add_command,
    json_argument,
    model_arguments,
    print_json,
    progress,
    resolve_model,
)
from inference.core.specs import TFLITE_VARIANTS, parse_variants
from inference.engine.convert import conversion_record, ensure_variants


def register(subcommands: Subcommands) -> None:
    parser = add_command(subcommands, "convert", help="build and cache TFLite variants")
    model_arguments(parser)
    parser.add_argument("--variant", default="all", help="fp32, fp16, dynamic, int8, or 'all'")
    parser.add_argument(
        "--calibration",
        nargs="+",
        type=Path,
        default=None,
        metavar="PATH",
        help="images or folders for int8 calibration (default: assets/calibration)",
    )
    json_argument(parser)


def run(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    allowed = tuple(v for v in spec.variants if v.is_tflite) or TFLITE_VARIANTS
    variants = parse_variants(args.variant, allowed)
    paths = ensure_variants(spec, variants, progress=progress, calibration=args.calibration)
    if args.json:
        print_json([
            {"model": spec.name, "variant": variant.value, "path": str(path),
             "bytes": path.stat().st_size, "seconds": conversion_record(path).get("seconds")}
            for variant, path in paths.items()
        ])  # fmt: skip
        return 0
    for variant, path in paths.items():
        print(f"{spec.name} {variant.value:<8} {path.stat().st_size / 1e6:8.2f} MB  {path}")
    return 0
