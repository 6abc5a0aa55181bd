"""``quantize``: make a variant from a recipe with ai-edge-quantizer, and optionally save it.

The recipe is a built-in name, a saved variant's name or a recipe ``.json``;
``--keep-float*`` keeps chosen ops in float, and ``--name`` saves the result as
a variant that every other command (and the pages) can then use by name. It
prints the file's path, or with ``--json`` one object with model, recipe,
variant, path, bytes and seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from inference.cli.common import (
    Subcommands,
    add_command,
    float_selection,
    json_argument,
    keep_float_arguments,
    model_arguments,
    print_json,
    progress,
    ranking_report,
    resolve_model,
)
from inference.core.specs import check_variant_name
from inference.engine.convert import conversion_record, ensure_recipe
from inference.formats.recipes import Recipe, load_recipe, variant_recipe
from inference.registry.saved_variants import save_variant


def register(subcommands: Subcommands) -> None:
    parser = add_command(
        subcommands, "quantize", help="make a variant from a recipe (ai-edge-quantizer)"
    )
    model_arguments(parser)
    parser.add_argument(
        "--recipe",
        required=True,
        help="a built-in recipe (fp16, dynamic, int8, int16x8, w4), a saved variant's name, "
        "or a recipe .json file",
    )
    parser.add_argument(
        "--calibration",
        nargs="+",
        type=Path,
        default=None,
        metavar="PATH",
        help="images or folders for calibrated recipes (default: the model's set)",
    )
    keep_float_arguments(parser)
    parser.add_argument(
        "--name",
        default=None,
        help="save the variant under this name: then --variant NAME works in predict, bench, "
        "evaluate and layers, and the pages list it with the model's variants",
    )
    json_argument(parser)


def run(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    selection = float_selection(args)
    if args.name is not None:
        check_variant_name(args.name)
    saved = {v.value: v for v in spec.recipe_variants}
    base = variant_recipe(saved[args.recipe]) if args.recipe in saved else load_recipe(args.recipe)
    report = ranking_report(spec, base, args.calibration, []) if selection.worst else None
    recipe = selection.apply(base, report)
    if args.name is not None:  # the file is named after it: the saved variant finds it
        recipe = Recipe(name=args.name, text=recipe.text)
    start = time.perf_counter()
    path = ensure_recipe(spec, recipe, progress=progress, calibration=args.calibration)
    seconds = conversion_record(path).get("seconds", time.perf_counter() - start)
    if args.name is not None:
        save_variant(spec, args.name, recipe, tuple(args.calibration or ()))
    if args.json:
        print_json({"model": spec.name, "recipe": recipe.name, "variant": args.name,
                    "path": str(path), "bytes": path.stat().st_size,
                    "seconds": seconds})  # fmt: skip
    else:
        print(path)
        if args.name is not None:
            print(f"saved as the variant {args.name!r} of {spec.name}: use --variant "
                  f"{args.name}", file=sys.stderr)  # fmt: skip
    return 0
