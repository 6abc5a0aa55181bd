"""Command line: ``python -m inference COMMAND``, one module of this package per command.

A command is a module ``inference.cli.<name>`` with ``register(subcommands)``,
which adds its sub-parser (see :mod:`inference.cli.common` for the shared
options), and ``run(args) -> int``, which returns the exit status. Adding one
is that module plus its name in :data:`COMMAND_NAMES`.

Output contracts (the app and other tools build on them):

- Every command takes ``--json`` and then prints one JSON document on stdout;
  progress and skipped files go to stderr. For ``bench`` and ``evaluate`` it
  is the same as ``--format json``.
- ``models --json``: a list of models with name, input size, classes, source,
  offline availability and variants.
- ``predict --json``: a list with one object per image and variant, shaped as
  :meth:`inference.core.specs.Prediction.as_dict`.
- Any bad input: exit status 2 (usage) or 1 (input), and one line
  ``error: ...`` on stderr. A bug also gives one line (status 1); its
  traceback goes to stderr too with ``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from inference.cli.common import Parser, render
from inference.cli.common import load_labelled_set as _labelled_set  # noqa: F401  (tests import it)
from inference.core.errors import InferenceError, UsageError

__all__ = ["COMMANDS", "COMMAND_NAMES", "build_parser", "main", "render"]

COMMAND_NAMES = (
    "models",
    "predict",
    "convert",
    "quantize",
    "layers",
    "sensitivity",
    "autoquant",
    "bench",
    "evaluate",
    "explain",
    "robustness",
)
"""The commands, in the order ``--help`` lists them; each is the module ``inference.cli.<name>``."""

_MODULES = {name: importlib.import_module(f"{__name__}.{name}") for name in COMMAND_NAMES}
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    name: module.run for name, module in _MODULES.items()
}
"""Each command's ``run``, looked up when the command runs."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m inference",
        description="Classify images with a Keras model and its quantized TFLite variants.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in _MODULES.values():
        module.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for a usage error, 0 after ``--help``)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the help or the one error line
        return exc.code if isinstance(exc.code, int) else 0
    with _native_stderr_to_devnull():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:  # an option value argparse could not check
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except InferenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (run with --verbose for the traceback)"
        print(f"error: unexpected {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _native_stderr_to_devnull() -> Iterator[None]:
    """Keep TensorFlow's and LiteRT's C++ log lines off the terminal.

    They write to file descriptor 2 directly (absl start-up lines, "Created
    TensorFlow Lite XNNPACK delegate"), which would bury the one-line error
    contract. Python's ``sys.stderr`` keeps the real terminal (or wherever a
    caller of :func:`main` pointed it); set QUANTLENS_NATIVE_LOGS=1 to see the
    native lines.
    """
    if os.environ.get("QUANTLENS_NATIVE_LOGS") == "1":
        yield
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    saved_stream = sys.stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    if _on_fd_2(saved_stream):
        sys.stderr = open(saved_fd, "w", buffering=1, closefd=False)  # noqa: SIM115
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = saved_stream
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


def _on_fd_2(stream: TextIO) -> bool:
    """Whether ``stream`` writes to file descriptor 2 (not a caller's buffer, say)."""
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return False
