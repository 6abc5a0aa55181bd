"""``robustness``: accuracy of each variant under natural corruptions, severity by severity.

Runs the labelled set clean and under each corruption (ImageNet-C's noises,
blurs, brightness, contrast, JPEG, pixelate, and the resize method) at each
severity, streamed through this process, local workers (``--workers``) or Ray
(``--ray``). In this process (``--workers 0``) each condition's rows are printed as
it finishes; on workers or Ray every condition runs in one engine run and the
rows come at its end. ``--json`` prints
one document at the end: ``records`` (``variant``, ``corruption``, ``severity``,
0 for clean, ``accuracy``, ``agreement`` with the baseline, ``images``) and
``mce`` per variant relative to the baseline (``fp32`` when it runs).
"""

from __future__ import annotations

import argparse

from inference.analysis.robustness import RobustnessRecord, robustness
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
from inference.formats.corruptions import CORRUPTIONS, parse_corruptions


def register(subcommands: Subcommands) -> None:
    parser = add_command(
        subcommands, "robustness", help="accuracy of every variant under natural corruptions"
    )
    model_arguments(parser)
    data_argument(parser)
    parser.add_argument(
        "--variants", default="fp32,int8", help="comma-separated variants (default fp32,int8)"
    )
    parser.add_argument(
        "--corruptions",
        default="",
        help=f"comma-separated, default all: {', '.join(CORRUPTIONS)}",
    )
    parser.add_argument("--severities", default="", help="comma-separated 1-5 (default all)")
    engine_arguments(parser)
    format_arguments(parser)


def run(args: argparse.Namespace) -> int:
    conditions = parse_corruptions(args.corruptions, args.severities)
    spec, runners, dataset = labelled_run(args)
    streaming = args.format != "json"

    def show(records: list[RobustnessRecord]) -> None:
        if streaming:
            for record in records:
                print(_line(record), flush=True)

    with open_engine_for(args) as engine:
        report = robustness(
            spec,
            runners,
            dataset,
            conditions,
            engine=engine,
            progress=run_progress,
            on_records=show,
        )
    print_skipped(report.problems)
    if args.format == "json":
        print_json(report.as_dict())
        return 0
    rows = [
        {"variant": v, "mCE": m["mce"], "relative mCE": m["relative_mce"]}
        for v, m in report.mce().items()
    ]
    print()
    print(render(rows, args.format))
    if args.format == "markdown":
        print(
            f"\nmCE: summed error over the severities relative to {report.baseline}, "
            f"averaged over corruptions (1.0 = as robust as {report.baseline}); "
            f"{report.engine}, {report.seconds:.1f} s"
        )
    return 0


def _line(record: RobustnessRecord) -> str:
    agreement = "" if record.agreement is None else f", agreement {record.agreement:.1%}"
    condition = "clean" if record.severity == 0 else f"{record.corruption} {record.severity}"
    return f"{record.variant:>10}  {condition:<20} accuracy {record.accuracy:.1%}{agreement}"
