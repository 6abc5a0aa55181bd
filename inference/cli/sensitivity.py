"""``sensitivity``: quantize one op (or one block) at a time and rank them by what it costs.

The ground truth for the layer report's ranking: for every op of the float
model, a model with only that op quantized by the variant's recipe (or a
recipe file) is run on the images, and its output is compared with the float
model's: output SNR, top-1 agreement, and with ``--data`` the accuracy drop.
Rank 1 is the op whose quantization alone hurts most. It also reports how far
the one-pass ranking (each op's own error, ``layers``) agrees with the scan.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from inference.analysis.layer_report import compare_layers, short_name
from inference.analysis.search import LabelledInputs
from inference.analysis.sensitivity import MAX_SCAN_IMAGES, ranking_agreement, sensitivity_scan
from inference.cli.common import (
    Subcommands,
    add_command,
    engine_arguments,
    json_argument,
    load_labelled_set,
    model_arguments,
    open_engine_for,
    preprocessed,
    print_json,
    progress,
    render,
    resolve_model,
    run_progress,
)
from inference.core.errors import UsageError
from inference.core.specs import ModelSpec, Variant
from inference.engine.convert import ensure_recipe, ensure_variants
from inference.formats.recipes import Recipe, load_recipe, variant_recipe
from inference.registry.catalog import resolve

REPORT_IMAGES = 4
"""Images the one-pass report runs on to compare its ranking with the scan's."""


def register(subcommands: Subcommands) -> None:
    parser = add_command(
        subcommands, "sensitivity", help="quantize one op at a time: which ones hurt the output"
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"a labelled folder or zip (one folder per class) instead of images; at most "
        f"{MAX_SCAN_IMAGES} images, each adds the accuracy drop",
    )
    model_arguments(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--variant", default=None, help="the quantized variant (default int8)")
    which.add_argument("--recipe", type=Path, default=None, help="a recipe JSON file instead")
    parser.add_argument(
        "--block",
        default=None,
        metavar="REGEX",
        help=r"quantize one block at a time: a regex whose group names the block in tensor "
        r"names (e.g. 'blocks\.(\d+)\.')",
    )
    engine_arguments(parser)
    json_argument(parser)


def run(args: argparse.Namespace) -> int:
    if bool(args.images) == (args.data is not None):
        raise UsageError("give image files, or --data with a labelled folder or zip")
    spec = resolve_model(args)
    recipe = _recipe(spec, args)
    inputs, labels = _inputs(spec, args)
    float_file = ensure_variants(spec, [Variant.FP32], progress=progress)[Variant.FP32]
    with open_engine_for(args) as engine:
        scan = sensitivity_scan(
            spec,
            float_file,
            recipe,
            inputs,
            labels,
            block=args.block,
            workers=args.workers or None,
            progress=run_progress,
            engine=engine,
        )
    candidate = ensure_recipe(spec, recipe, progress=progress)
    report = compare_layers(float_file, candidate, inputs[:REPORT_IMAGES])
    agreement = ranking_agreement(report, scan) if args.block is None else None
    if args.json:
        print_json({**scan.as_dict(), "agreement_with_own_error": agreement})
        return 0
    print(
        f"{spec.name} {recipe.name}: {len(scan.records)} targets on {scan.images} image(s) "
        f"({scan.engine}) in {scan.seconds:.1f} s"
    )
    rows = [{**r.as_dict(), "tensor": short_name(r.tensor)} for r in scan.records[:10]]
    print("\n" + render(rows, "markdown"))
    if agreement is not None and agreement["spearman"] is not None:
        print(
            f"\none-pass ranking (own error, {REPORT_IMAGES} images) against the scan: "
            f"same first op: {'yes' if agreement['same_first'] else 'no'}, "
            f"top-5 overlap {agreement['top5_overlap']}/5, Spearman {agreement['spearman']:.2f}"
        )
    return 0


def _recipe(spec: ModelSpec, args: argparse.Namespace) -> Recipe:
    if args.recipe is not None:
        return load_recipe(args.recipe)
    _, (variant,) = resolve(
        spec, args.variant or "int8", single=True, among=lambda v: v.is_quantized
    )
    return variant_recipe(variant)


def _inputs(spec: ModelSpec, args: argparse.Namespace) -> tuple[list[np.ndarray], list[int] | None]:
    if args.data is None:
        if len(args.images) > MAX_SCAN_IMAGES:
            raise UsageError(f"{len(args.images)} images; at most {MAX_SCAN_IMAGES} are accepted")
        return preprocessed(spec, args.images), None
    dataset = load_labelled_set(args.data, spec.labels)
    if dataset.count is not None and dataset.count > MAX_SCAN_IMAGES:
        raise UsageError(
            f"{args.data}: {dataset.count} images; a scan runs every op on each, so at "
            f"most {MAX_SCAN_IMAGES} are accepted"
        )
    inputs, labels = [], []
    for batch, classes in LabelledInputs(spec, dataset, cache_bytes=0).batches():
        inputs += [row[None] for row in batch]
        labels += [int(c) for c in classes]
        if len(inputs) > MAX_SCAN_IMAGES:  # a stream whose count was not known on opening
            raise UsageError(f"{args.data}: more than {MAX_SCAN_IMAGES} images; a scan runs "
                             "every op on each")  # fmt: skip
    return inputs, labels
