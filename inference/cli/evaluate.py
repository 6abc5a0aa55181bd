"""``evaluate``: accuracy of every variant of a model on a labelled set.

The set is a folder of class folders, a zip, a CSV manifest, Parquet or
WebDataset tar shards, streamed; it runs on local worker processes (one per
core by default, ``--workers``) or a Ray cluster (``--ray``). It prints
accuracy, top-5, agreement with the reference variant and time per image per
variant, then per-class accuracy (``--format markdown``; ``csv`` gives the
summary alone). ``--json`` (same as ``--format json``) adds the run (images,
images per second, each stage's share, the nodes that worked and their
share), the confusion matrices and the files that were skipped.
"""

from __future__ import annotations

import argparse

from inference.analysis.evaluate import Evaluation, evaluate
from inference.cli.common import (
    Subcommands,
    add_command,
    data_argument,
    engine_arguments,
    format_arguments,
    labelled_run,
    model_arguments,
    open_engine_for,
    print_json,
    print_skipped,
    render,
    run_progress,
)


def register(subcommands: Subcommands) -> None:
    parser = add_command(
        subcommands, "evaluate", help="accuracy of every variant on a labelled folder"
    )
    model_arguments(parser)
    data_argument(parser)
    parser.add_argument("--variants", default="all", help="comma-separated variants, or 'all'")
    engine_arguments(parser)
    format_arguments(parser)


def run(args: argparse.Namespace) -> int:
    spec, runners, dataset = labelled_run(args)
    with open_engine_for(args) as engine:
        report = evaluate(spec, runners, dataset, engine=engine, progress=run_progress)
    print_skipped(report.problems)
    summary = [s.as_row() for s in report.scores]
    if args.format == "json":
        print_json(
            {
                "model": report.model,
                "images": report.images,
                "reference": report.reference.value,
                "run": report.summary(),
                "summary": summary,
                "per_class": report.per_class_rows(),
                "calibration": report.calibration(),
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
            f"as {report.reference.value}; {report.engine}, "
            f"{report.images_per_second:.1f} images/s ({_shares(report)})\n"
        )
        print(render(report.per_class_rows(), "markdown"))
    return 0


def _shares(report: Evaluation) -> str:
    shares = report.stage_shares()
    return ", ".join(f"{stage} {share:.0%}" for stage, share in shares.items())
