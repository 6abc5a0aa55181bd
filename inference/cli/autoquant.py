"""``autoquant``: the smallest file whose accuracy drop fits a budget.

It runs :func:`inference.analysis.search.search` on a labelled folder (or zip),
keeping the most damaging ops in float (by each op's own error, or with
``--scan`` by a sensitivity scan on the set's first images), printing one line
per candidate tried and then the chosen file, or with ``--json`` every step and
the chosen file under ``"chosen"``. No candidate within ``--max-drop`` is an
error (exit status 1).
"""

from __future__ import annotations

import argparse
import sys

from inference.analysis.evaluate import LabelledSet
from inference.analysis.search import LabelledInputs, SearchStep, search
from inference.analysis.sensitivity import MAX_SCAN_IMAGES, sensitivity_scan
from inference.cli.common import (
    Subcommands,
    add_command,
    data_argument,
    engine_arguments,
    json_argument,
    load_labelled_set,
    model_arguments,
    open_engine_for,
    positive_int,
    print_json,
    progress,
    resolve_model,
)
from inference.core.specs import AnyVariant, ModelSpec, Variant
from inference.engine.convert import ensure_variants
from inference.engine.shards import Engine
from inference.formats.recipes import variant_recipe
from inference.registry.catalog import resolve


def register(subcommands: Subcommands) -> None:
    parser = add_command(
        subcommands,
        "autoquant",
        help="keep the worst layers in float until the accuracy drop fits a budget",
    )
    model_arguments(parser)
    data_argument(parser)
    parser.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        metavar="POINTS",
        help="largest top-1 accuracy drop against the float model, in points (default 0.5)",
    )
    parser.add_argument("--variant", default="int8", help="variant to start from (default int8)")
    parser.add_argument(
        "--scan",
        type=positive_int,
        default=None,
        metavar="N",
        help="order the ops by a sensitivity scan on the set's first N images (default: by "
        "each op's own error)",
    )
    engine_arguments(parser)
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

    with open_engine_for(args) as engine:
        ranking = _scan_ranking(spec, variant, dataset, args.scan, engine) if args.scan else None
        result = search(spec, dataset, max_drop=args.max_drop, variant=variant, ranking=ranking,
                        on_step=show, progress=progress, engine=engine)  # fmt: skip
    chosen = result.chosen
    if args.json:
        print_json({"model": spec.name, "variant": variant.value, **result.as_dict()})
    elif chosen is not None:
        print(f"float accuracy {result.float_accuracy:.2%} on {result.images} images (budget "
              f"{result.allowed_images} images); chosen, the smallest within it "
              f"({chosen.lost_images} images lost, {len(chosen.kept)} tensors in float, "
              f"{chosen.size_bytes / 1e6:.2f} MB):")  # fmt: skip
        print(chosen.path)
    if chosen is None:
        print(f"error: no candidate keeps the drop within {args.max_drop:g} points, even with "
              "every quantized tensor in float", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _scan_ranking(
    spec: ModelSpec, variant: AnyVariant, dataset: LabelledSet, images: int, engine: Engine
) -> list[str]:
    """Tensors by a sensitivity scan on the set's first ``images`` images, worst first."""
    inputs = LabelledInputs(spec, dataset).first(min(images, MAX_SCAN_IMAGES))
    float_file = ensure_variants(spec, [Variant.FP32], progress=progress)[Variant.FP32]
    scan = sensitivity_scan(spec, float_file, variant_recipe(variant), inputs, progress=progress,
                            engine=engine)  # fmt: skip
    return [record.tensor for record in scan.records]
