"""``models``: the model zoo, one line per model (or ``--json``).

Each row gives the name, input size, classes, source (bundled or download),
whether the model works offline, and its variants; ``--json`` prints the rows
of :func:`inference.registry.zoo.describe` as they are.
"""

from __future__ import annotations

import argparse

from inference.cli.common import Subcommands, add_command, json_argument, print_json
from inference.registry.catalog import resolve_spec
from inference.registry.zoo import ZOO, describe


def register(subcommands: Subcommands) -> None:
    parser = add_command(subcommands, "models", help="list the model zoo")
    json_argument(parser)


def run(args: argparse.Namespace) -> int:
    rows = [describe(resolve_spec(spec)) for spec in ZOO.values()]
    if args.json:
        print_json(rows)
        return 0
    print(f"{'model':<20} {'input':>9} {'classes':>7}  {'source':<9} {'offline':<7} variants")
    for row in rows:
        size = "x".join(map(str, row["input_size"]))
        offline = "yes" if row["available_offline"] else "no"
        print(
            f"{row['name']:<20} {size:>9} {row['num_classes']:>7}  {row['source']:<9} "
            f"{offline:<7} {', '.join(row['variants'])}"
        )
    return 0
