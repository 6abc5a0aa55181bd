"""What the command modules share: the parser pieces, model resolution, progress and tables.

Each command module builds its sub-parser from these pieces (:func:`add_command`,
:func:`model_arguments`, :func:`keep_float_arguments`, :func:`json_argument`,
:func:`format_arguments`), so an option is spelled and explained the same way in
every command; :func:`resolve_model`, :func:`load_labelled_set`, :func:`progress`
and :func:`render` are the steps several commands run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TypeAlias

import numpy as np

from inference.analysis.layer_report import FloatSelection, LayerReport, compare_layers
from inference.core.errors import InputError, UsageError
from inference.core.specs import NORMALIZE_HELP, AnyVariant, ModelSpec
from inference.engine.convert import ensure_recipe, float_path
from inference.engine.executors import Engine, open_engine
from inference.engine.runners import Runner
from inference.formats.calibration import calibration_images
from inference.formats.datasets import LabelledSet, open_labelled
from inference.formats.images import decode_image, preprocess
from inference.formats.recipes import Recipe
from inference.registry.catalog import resolve, resolve_spec
from inference.registry.loading import load_runners
from inference.registry.user_models import CUSTOM_SUFFIXES, custom_spec
from inference.registry.zoo import DEFAULT_MODEL, ZOO, get_spec

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What :func:`add_command` adds a command to (``parser.add_subparsers()``)."""
FORMATS = ["markdown", "csv", "json"]
RANKING_IMAGES = 4
"""Calibration photos that rank tensors for --keep-worst when no image is given."""


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as the one-line ``error: ...`` contract."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer; received {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {value}")
    return value


def non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def add_command(subcommands: Subcommands, name: str, *, help: str) -> argparse.ArgumentParser:
    """A command's sub-parser, with the options every command takes (``--verbose``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", help="print the traceback of an unexpected error"
    )
    return subcommands.add_parser(name, parents=[common], help=help)


def json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def format_arguments(parser: argparse.ArgumentParser) -> None:
    """``--format`` for tables, and ``--json`` as every command spells ``--format json``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--format", choices=FORMATS, default="markdown")
    group.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )


def engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers N`` (local processes) and ``--ray ADDRESS``: where the images are run."""
    parser.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="local worker processes (default: one per core; 0: in this process)",
    )
    parser.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster: its address, or 'auto' (default: $QUANTLENS_RAY_ADDRESS)",
    )


def data_argument(parser: argparse.ArgumentParser) -> None:
    """``--data``: a labelled set in any of the streamed sources, required."""
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="a labelled set: a folder (or .zip) with one sub-folder per class, a path,label "
        ".csv, .parquet or WebDataset .tar shards",
    )


def open_engine_for(args: argparse.Namespace) -> Engine:
    """The engine ``--workers``/``--ray`` ask for, announced on stderr."""
    engine = open_engine(args.workers, args.ray)
    print(f"{engine.description}", file=sys.stderr, flush=True)
    return engine


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a zoo name ({', '.join(ZOO)}) or a .keras/.h5/.tflite file "
        f"(default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="labels file for your own model (default: the .tflite's metadata, if any)",
    )
    parser.add_argument(
        "--normalize",
        default=None,
        choices=list(NORMALIZE_HELP),
        help="pixel scaling your own model expects (default: the .tflite's metadata, "
        "else raw: 0-255)",
    )
    parser.add_argument(
        "--outputs",
        default="auto",
        choices=["auto", "probabilities", "logits"],
        help="what your own model outputs (default auto: probabilities if it ends in a softmax)",
    )


def keep_float_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-float",
        nargs="+",
        default=[],
        metavar="REGEX",
        help="keep ops whose output tensor name matches REGEX in float",
    )
    parser.add_argument(
        "--keep-float-op",
        nargs="+",
        default=[],
        metavar="OP",
        help="keep every op of these TFLite types in float (e.g. SOFTMAX CONV_2D)",
    )
    parser.add_argument(
        "--keep-worst",
        type=int,
        default=0,
        metavar="N",
        help="keep the N ops that lose the most SNR in float (ranked on the images, "
        "or on the calibration photos)",
    )


def float_selection(args: argparse.Namespace) -> FloatSelection:
    """The ops that :func:`keep_float_arguments` asked to keep in float."""
    if args.keep_worst < 0:
        raise UsageError(f"expected --keep-worst to be 0 or more; received {args.keep_worst}")
    return FloatSelection(
        regexes=tuple(args.keep_float),
        operations=tuple(args.keep_float_op),
        worst=args.keep_worst,
    )


def ranking_report(
    spec: ModelSpec, recipe: Recipe, calibration: Sequence[Path] | None, images: Sequence[Path]
) -> LayerReport:
    """The plain recipe's layer report that ``--keep-worst`` ranks tensors by."""
    plain = ensure_recipe(spec, recipe, progress=progress, calibration=calibration)
    photos = (
        list(images)
        or calibration_images([spec.calibration_dir] if spec.calibration_dir else None)[
            :RANKING_IMAGES
        ]
    )
    return compare_layers(float_path(spec), plain, preprocessed(spec, photos))


def preprocessed(spec: ModelSpec, images: Sequence[str | Path]) -> list[np.ndarray]:
    """Image files decoded and preprocessed for ``spec``, each ``(1, H, W, C)``."""
    pre = spec.preprocessing
    return [preprocess(decode_image(Path(p), color_mode=pre.color_mode), pre) for p in images]


def resolve_model(args: argparse.Namespace) -> ModelSpec:
    """A zoo name, or a path to the user's own model file."""
    name: str = args.model
    if name in ZOO:
        if args.labels is not None:
            raise InputError(f"--labels is for your own model file; {name} has its own labels")
        return resolve_spec(name)
    if Path(name).suffix.lower() in CUSTOM_SUFFIXES:
        outputs = None if args.outputs == "auto" else args.outputs
        spec = custom_spec(name, args.labels, normalize=args.normalize, outputs=outputs)
        return resolve_spec(spec)
    return get_spec(name)  # raises, listing the choices


def progress(message: str, fraction: float) -> None:
    """Conversion progress, on stderr so that stdout stays the command's answer."""
    print(f"convert: {fraction:4.0%} {message}", file=sys.stderr, flush=True)


def run_progress(message: str, fraction: float) -> None:
    """Progress of a run over a set, on stderr, at most every tenth of the way."""
    step = int(fraction * 10)
    if step != getattr(run_progress, "last", None) or fraction >= 1.0:
        run_progress.last = step  # type: ignore[attr-defined]
        print(f"run: {fraction:4.0%} {message}", file=sys.stderr, flush=True)


def load_labelled_set(data: Path, labels: tuple[str, ...]) -> LabelledSet:
    """A labelled folder, zip, CSV manifest, Parquet or WebDataset tar, streamed from disk."""
    return open_labelled(data, labels)


def labelled_run(
    args: argparse.Namespace,
) -> tuple[ModelSpec, dict[AnyVariant, Runner], LabelledSet]:
    """What a command that scores a labelled set reads from ``--model``, ``--variants``, ``--data``.

    Returns the spec, each variant's loaded runner (converted first if needed) and the set.
    """
    spec = resolve_model(args)
    _, variants = resolve(spec, args.variants)
    dataset = load_labelled_set(args.data, spec.labels)
    runners = dict(zip(variants, load_runners(spec, variants, progress=progress), strict=True))
    return spec, runners, dataset


def print_skipped(problems: Sequence[str]) -> None:
    """Each image a run could not use, one line on stderr."""
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)


def render(rows: list[dict[str, object]], fmt: str) -> str:
    """Rows as a Markdown or CSV table (no tabulate dependency for a dozen lines)."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value).replace("|", "\\|")
