"""``autoquant``: keep the worst layers in float until the accuracy drop fits a budget.

It runs :func:`inference.analysis.search.search` on a labelled folder (or zip),
printing one line per candidate tried and then the chosen file, or with
``--json`` every step and the chosen path at the end. No candidate within
``--max-drop`` is an error (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.analysis.search import SearchStep, search
from inference.cli.common import (
    Subcommands,
    add_command,
    json_argument,
    load_labelled_set,
    model_arguments,
    print_json,
    progress,
    resolve_model,
)
from inference.registry.catalog import resolve


def register(subcommands: Subcommands) -> None:
    parser = add_command(
        subcommands,
        "autoquant",
        help="keep the worst layers in float until the accuracy drop fits a budget",
    )
    model_arguments(parser)
    parser.add_argument(
        "--data", type=Path, required=True, help="folder (or .zip) with one sub-folder per class"
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        metavar="POINTS",
        help="largest top-1 accuracy drop against the float model, in points (default 0.5)",
    )
    parser.add_argument("--variant", default="int8", help="variant to start from (default int8)")
    json_argument(parser)


def run(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    _, (variant,) = resolve(spec, args.variant, single=True, among=lambda v: v.is_quantized)
    dataset = load_labelled_set(args.data, spec.labels)

    def show(step: SearchStep) -> None:
        if not args.json:
            print(f"float: {len(step.kept):>3} tensors  accuracy {step.accuracy:.2%}  "
                  f"drop {step.drop_points:+.2f} pt  {step.median_ms:.2f} ms  "
                  f"{step.size_bytes / 1e6:.2f} MB  built in {step.build_seconds:.1f} s",
                  flush=True)  # fmt: skip

    result = search(spec, dataset, max_drop=args.max_drop, variant=variant, on_step=show,
                    progress=progress)  # fmt: skip
    chosen = result.chosen
    if args.json:
        print_json({
            "model": spec.name, "variant": variant.value, "images": result.images,
            "float_accuracy": round(result.float_accuracy, 6), "max_drop": result.max_drop,
            "steps": [s.as_dict() for s in result.steps],
            "chosen": str(chosen.path) if chosen else None,
        })  # fmt: skip
    elif chosen is not None:
        print(f"float accuracy {result.float_accuracy:.2%} on {result.images} images; chosen "
              f"({chosen.drop_points:+.2f} pt, {len(chosen.kept)} tensors in float):")  # fmt: skip
        print(chosen.path)
    if chosen is None:
        print(f"error: no candidate keeps the drop within {args.max_drop:g} points, even with "
              "every quantized tensor in float", file=sys.stderr)  # fmt: skip
        return 1
    return 0
