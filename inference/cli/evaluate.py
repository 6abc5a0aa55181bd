"""``evaluate``: accuracy of every variant of a model on a labelled folder (or zip).

It prints accuracy, top-5, agreement with the reference variant and median
time per variant, then per-class accuracy (``--format markdown``; ``csv`` gives
the summary alone). ``--json`` (same as ``--format json``) adds the confusion
matrices and the files that were skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.analysis.evaluate import evaluate
from inference.cli.common import (
    Subcommands,
    add_command,
    format_arguments,
    load_labelled_set,
    model_arguments,
    print_json,
    progress,
    render,
    resolve_model,
)
from inference.registry.catalog import resolve
from inference.registry.loading import load_runners


def register(subcommands: Subcommands) -> None:
    parser = add_command(
        subcommands, "evaluate", help="accuracy of every variant on a labelled folder"
    )
    model_arguments(parser)
    parser.add_argument(
        "--data", type=Path, required=True, help="folder (or .zip) with one sub-folder per class"
    )
    parser.add_argument("--variants", default="all", help="comma-separated variants, or 'all'")
    format_arguments(parser)


def run(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    _, variants = resolve(spec, args.variants)
    dataset = load_labelled_set(args.data, spec.labels)
    runners = dict(zip(variants, load_runners(spec, variants, progress=progress), strict=True))
    report = evaluate(spec, runners, dataset)
    for problem in report.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    summary = [s.as_row() for s in report.scores]
    if args.format == "json":
        print_json(
            {
                "model": report.model,
                "images": report.images,
                "reference": report.reference.value,
                "summary": summary,
                "per_class": report.per_class_rows(),
                "confusion": {s.variant.value: s.confusion.tolist() for s in report.scores},
                "confusion_labels": [spec.labels[i] for i in report.classes] + ["other"],
                "problems": list(report.problems),
            }
        )
        return 0
    print(render(summary, args.format))
    if args.format == "markdown":
        print(
            f"\n{report.images} images, {len(report.classes)} classes; agreement = same top-1 "
            f"as {report.reference.value}\n"
        )
        print(render(report.per_class_rows(), "markdown"))
    return 0
