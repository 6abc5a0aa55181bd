"""Command line: ``python -m inference {models,predict,convert}``.

Output contracts (the app and other tools build on them):

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
import csv
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from inference.analysis import benchmark as bench
from inference.analysis.evaluate import LabelledSet, evaluate, scan_folder, scan_zip
from inference.analysis.layer_report import FloatSelection, LayerReport, compare_layers, short_name
from inference.analysis.search import SearchStep, search
from inference.core.errors import InferenceError, InputError, UsageError
from inference.core.machine import int8_outlook, machine, simd
from inference.core.specs import (
    NORMALIZE_HELP,
    TFLITE_VARIANTS,
    AnyVariant,
    ModelSpec,
    Variant,
    check_variant_name,
    parse_variants,
)
from inference.engine.convert import conversion_record, ensure_recipe, ensure_variants, float_path
from inference.formats.calibration import calibration_images
from inference.formats.images import decode_image, image_files, preprocess
from inference.formats.recipes import Recipe, load_recipe, variant_recipe
from inference.pipeline import Pipeline, PipelineOptions, classify
from inference.registry.catalog import resolve, resolve_spec
from inference.registry.loading import load_runners
from inference.registry.saved_variants import save_variant
from inference.registry.user_models import CUSTOM_SUFFIXES, custom_spec
from inference.registry.zoo import DEFAULT_MODEL, ZOO, describe, get_spec

__all__ = ["main", "render"]

FORMATS = ["markdown", "csv", "json"]
RANKING_IMAGES = 4
"""Calibration photos that rank tensors for --keep-worst when no image is given."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as the one-line ``error: ...`` contract."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer; received {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m inference",
        description="Classify images with a Keras model and its quantized TFLite variants.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", help="print the traceback of an unexpected error"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models = sub.add_parser("models", parents=[common], help="list the model zoo")
    models.add_argument("--json", action="store_true", help="print JSON")

    predict = sub.add_parser("predict", parents=[common], help="classify images")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _model_arguments(predict)
    predict.add_argument(
        "--variant",
        default=None,
        help="original, fp32, fp16, dynamic, int8, a comma list, or 'all' (default: int8)",
    )
    predict.add_argument(
        "--top-k", type=_positive_int, default=5, help="classes to show (default 5)"
    )
    predict.add_argument("--threads", type=_positive_int, default=None, help="LiteRT threads")
    predict.add_argument("--json", action="store_true", help="print JSON")

    convert = sub.add_parser("convert", parents=[common], help="build and cache TFLite variants")
    _model_arguments(convert)
    convert.add_argument("--variant", default="all", help="fp32, fp16, dynamic, int8, or 'all'")
    convert.add_argument(
        "--calibration",
        nargs="+",
        type=Path,
        default=None,
        metavar="PATH",
        help="images or folders for int8 calibration (default: assets/calibration)",
    )
    quantize = sub.add_parser(
        "quantize", parents=[common], help="make a variant from a recipe (ai-edge-quantizer)"
    )
    _model_arguments(quantize)
    quantize.add_argument(
        "--recipe",
        required=True,
        help="a built-in recipe (fp16, dynamic, int8, int16x8, w4), a saved variant's name, "
        "or a recipe .json file",
    )
    quantize.add_argument(
        "--calibration",
        nargs="+",
        type=Path,
        default=None,
        metavar="PATH",
        help="images or folders for calibrated recipes (default: the model's set)",
    )
    _keep_float_arguments(quantize)
    quantize.add_argument(
        "--name",
        default=None,
        help="save the variant under this name: then --variant NAME works in predict, bench, "
        "evaluate and layers, and the pages list it with the model's variants",
    )
    quantize.add_argument("--json", action="store_true", help="print JSON")

    layers = sub.add_parser(
        "layers",
        parents=[common],
        help="per-tensor error of a quantized file against its float one",
    )
    layers.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _model_arguments(layers)
    layers.add_argument("--variant", default="int8", help="the candidate variant (default int8)")
    layers.add_argument("--reference", type=Path, default=None, help="reference .tflite file")
    layers.add_argument("--candidate", type=Path, default=None, help="candidate .tflite file")
    layers.add_argument(
        "--threshold", type=float, default=20.0, help="SNR in dB that marks damage (default 20)"
    )
    _keep_float_arguments(layers)
    layers.add_argument("--json", action="store_true", help="print JSON")

    autoquant = sub.add_parser(
        "autoquant",
        parents=[common],
        help="keep the worst layers in float until the accuracy drop fits a budget",
    )
    _model_arguments(autoquant)
    autoquant.add_argument(
        "--data", type=Path, required=True, help="folder (or .zip) with one sub-folder per class"
    )
    autoquant.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        metavar="POINTS",
        help="largest top-1 accuracy drop against the float model, in points (default 0.5)",
    )
    autoquant.add_argument("--variant", default="int8", help="variant to start from (default int8)")
    autoquant.add_argument("--json", action="store_true", help="print JSON")

    bench = sub.add_parser("bench", parents=[common], help="latency, size and memory per variant")
    bench.add_argument("--models", default=DEFAULT_MODEL, help="comma-separated zoo names")
    bench.add_argument("--variants", default="all", help="comma-separated variants, or 'all'")
    bench.add_argument("--images", type=Path, default=None, help="also classify these images")
    bench.add_argument("--runs", type=_positive_int, default=50, help="timed runs (default 50)")
    bench.add_argument("--warmup", type=_positive_int, default=5, help="discarded runs (default 5)")
    bench.add_argument("--threads", type=_positive_int, default=None, help="LiteRT threads")
    bench.add_argument("--format", choices=FORMATS, default="markdown")

    evaluate = sub.add_parser(
        "evaluate", parents=[common], help="accuracy of every variant on a labelled folder"
    )
    _model_arguments(evaluate)
    evaluate.add_argument(
        "--data", type=Path, required=True, help="folder (or .zip) with one sub-folder per class"
    )
    evaluate.add_argument("--variants", default="all", help="comma-separated variants, or 'all'")
    evaluate.add_argument("--format", choices=FORMATS, default="markdown")
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
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


def _keep_float_arguments(parser: argparse.ArgumentParser) -> None:
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


def _selection(args: argparse.Namespace) -> FloatSelection:
    if args.keep_worst < 0:
        raise UsageError(f"expected --keep-worst to be 0 or more; received {args.keep_worst}")
    return FloatSelection(
        regexes=tuple(args.keep_float),
        operations=tuple(args.keep_float_op),
        worst=args.keep_worst,
    )


def _ranking_report(
    spec: ModelSpec, recipe: Recipe, calibration: Sequence[Path] | None, images: Sequence[Path]
) -> LayerReport:
    """The plain recipe's layer report that ``--keep-worst`` ranks tensors by."""
    plain = ensure_recipe(spec, recipe, progress=_progress, calibration=calibration)
    pre = spec.preprocessing
    photos = (
        list(images)
        or calibration_images([spec.calibration_dir] if spec.calibration_dir else None)[
            :RANKING_IMAGES
        ]
    )
    batches = [preprocess(decode_image(p, color_mode=pre.color_mode), pre) for p in photos]
    return compare_layers(float_path(spec), plain, batches)


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


def _progress(message: str, fraction: float) -> None:
    print(f"convert: {fraction:4.0%} {message}", file=sys.stderr, flush=True)


def cmd_models(args: argparse.Namespace) -> int:
    rows = [describe(resolve_spec(spec)) for spec in ZOO.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
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


def cmd_predict(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    default = (Variant.INT8,) if Variant.INT8 in spec.variants else spec.variants[:1]
    variants = args.variant if args.variant is not None else default
    options = PipelineOptions(top_k=args.top_k, threads=args.threads, progress=_progress)
    pipeline = Pipeline(spec, variants, options=options)
    images = [Path(p) for p in args.images]
    for path in images:  # fail fast, before any model loads
        if not path.is_file():
            raise InputError(f"{path}: no such file; expected a path to an image")

    results = []
    failed = False
    with pipeline:
        for path in images:
            try:
                results.extend(pipeline(path, name=str(path)))
            except InputError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed = True
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        width = max([8, *(len(v.value) for v in pipeline.variants)])
        for result in results:
            classes = "  ".join(f"{c.label} {c.score:.1%}" for c in result.top_k)
            print(
                f"{result.image}  {result.model} {result.variant.value:<{width}} "
                f"{result.timing.total:7.1f} ms  {classes}"
            )
    return 1 if failed else 0


def cmd_convert(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    allowed = tuple(v for v in spec.variants if v.is_tflite) or TFLITE_VARIANTS
    variants = parse_variants(args.variant, allowed)
    paths = ensure_variants(spec, variants, progress=_progress, calibration=args.calibration)
    for variant, path in paths.items():
        print(f"{spec.name} {variant.value:<8} {path.stat().st_size / 1e6:8.2f} MB  {path}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    selection = _selection(args)
    if args.name is not None:
        check_variant_name(args.name)
    saved = {v.value: v for v in spec.recipe_variants}
    base = variant_recipe(saved[args.recipe]) if args.recipe in saved else load_recipe(args.recipe)
    report = _ranking_report(spec, base, args.calibration, []) if selection.worst else None
    recipe = selection.apply(base, report)
    if args.name is not None:  # the file is named after it: the saved variant finds it
        recipe = Recipe(name=args.name, text=recipe.text)
    start = time.perf_counter()
    path = ensure_recipe(spec, recipe, progress=_progress, calibration=args.calibration)
    seconds = conversion_record(path).get("seconds", time.perf_counter() - start)
    if args.name is not None:
        save_variant(spec, args.name, recipe, tuple(args.calibration or ()))
    if args.json:
        row = {"model": spec.name, "recipe": recipe.name, "variant": args.name,
               "path": str(path), "bytes": path.stat().st_size, "seconds": seconds}  # fmt: skip
        print(json.dumps(row, indent=2))
    else:
        print(path)
        if args.name is not None:
            print(f"saved as the variant {args.name!r} of {spec.name}: use --variant "
                  f"{args.name}", file=sys.stderr)  # fmt: skip
    return 0


def _labelled_set(data: Path, labels: tuple[str, ...]) -> LabelledSet:
    """A labelled folder, or a zip of up to 20 000 images read member by member from disk."""
    if data.suffix.lower() == ".zip" and data.is_file():
        return scan_zip(data, labels, name=data.name)
    return scan_folder(data, labels)


def cmd_autoquant(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    _, (variant,) = resolve(spec, args.variant, single=True, among=lambda v: v.is_quantized)
    dataset = _labelled_set(args.data, spec.labels)

    def show(step: SearchStep) -> None:
        if not args.json:
            print(f"float: {len(step.kept):>3} tensors  accuracy {step.accuracy:.2%}  "
                  f"drop {step.drop_points:+.2f} pt  {step.median_ms:.2f} ms  "
                  f"{step.size_bytes / 1e6:.2f} MB  built in {step.build_seconds:.1f} s",
                  flush=True)  # fmt: skip

    result = search(spec, dataset, max_drop=args.max_drop, variant=variant, on_step=show,
                    progress=_progress)  # fmt: skip
    chosen = result.chosen
    if args.json:
        print(json.dumps({
            "model": spec.name, "variant": variant.value, "images": result.images,
            "float_accuracy": round(result.float_accuracy, 6), "max_drop": result.max_drop,
            "steps": [s.as_dict() for s in result.steps],
            "chosen": str(chosen.path) if chosen else None,
        }, indent=2))  # fmt: skip
    elif chosen is not None:
        print(f"float accuracy {result.float_accuracy:.2%} on {result.images} images; chosen "
              f"({chosen.drop_points:+.2f} pt, {len(chosen.kept)} tensors in float):")  # fmt: skip
        print(chosen.path)
    if chosen is None:
        print(f"error: no candidate keeps the drop within {args.max_drop:g} points, even with "
              "every quantized tensor in float", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _layer_inputs(args: argparse.Namespace) -> tuple[Path, Path, list[np.ndarray]]:
    """The reference and candidate files, and the images preprocessed for them."""
    if (args.reference is None) != (args.candidate is None):
        raise UsageError("give both --reference and --candidate, or --model and --variant")
    selection = _selection(args)
    if args.reference is not None:
        if selection:
            raise UsageError("--keep-float needs --model and --variant (the app rebuilds the file)")
        spec = custom_spec(args.reference, normalize=args.normalize)
        reference, candidate = args.reference, args.candidate
    else:
        spec = resolve_model(args)
        _, (variant,) = resolve(spec, args.variant, single=True, among=lambda v: v.is_tflite)
        paths = ensure_variants(spec, [Variant.FP32, variant], progress=_progress)
        reference, candidate = paths[Variant.FP32], paths[variant]
        if selection:
            if not variant.is_quantized:
                raise UsageError(f"--keep-float needs a quantized --variant; received {variant}")
            base = variant_recipe(variant)
            images = [Path(p) for p in args.images]
            report = _ranking_report(spec, base, None, images) if selection.worst else None
            candidate = ensure_recipe(spec, selection.apply(base, report), progress=_progress)
    pre = spec.preprocessing
    batches = [
        preprocess(decode_image(Path(image), color_mode=pre.color_mode), pre)
        for image in args.images
    ]
    return reference, candidate, batches


def cmd_layers(args: argparse.Namespace) -> int:
    reference, candidate, batches = _layer_inputs(args)
    report = compare_layers(reference, candidate, batches)
    if args.json:
        print(json.dumps(report.as_rows(), indent=2))
        return 0
    first = report.first_below(args.threshold)
    print(f"{candidate.name} against {reference.name}, {report.images} image(s), "
          f"{len(report.records)} tensors")  # fmt: skip
    if first is None:
        print(f"no tensor falls below {args.threshold:g} dB")
    else:
        print(f"damage starts at #{first.index} {first.op} {short_name(first.tensor)} "
              f"({first.snr_db:.1f} dB < {args.threshold:g} dB)")  # fmt: skip
    worst = [{**r.as_dict(), "tensor": short_name(r.tensor)} for r in report.worst(10)]
    print("\n" + render(worst, "markdown"))
    return 0


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: expected a folder of images")
    files = image_files(folder)
    if not files:
        raise InputError(f"{folder}: no image files (.jpg, .png, ...) found")
    return files


def cmd_bench(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    picked = [resolve(name, args.variants) for name in names]
    images = _image_files(args.images) if args.images else []
    jobs = [(spec, v) for spec, variants in picked for v in variants]

    def announce(spec: ModelSpec, variant: AnyVariant, fraction: float) -> None:
        print(f"bench: {spec.name} {variant.value}", file=sys.stderr, flush=True)

    measured = bench.run_benchmarks(
        jobs,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        on_job=announce,
        convert_progress=_progress,
    )
    results = [result for result, _ in measured]
    runners = {(r.model, r.variant): runner for r, runner in measured}
    runner_vs_bare = twelve_mp_ms = None
    default_int8 = runners.get((DEFAULT_MODEL, Variant.INT8))
    if default_int8 is not None:
        runner_vs_bare = bench.runner_overhead(default_int8, args.runs)
        twelve_mp_ms = bench.twelve_megapixel_ms(default_int8, min(args.runs, 20))
    targets = bench.targets(results, runner_vs_bare=runner_vs_bare, twelve_mp_ms=twelve_mp_ms)
    image_rows = []
    for path in images:
        row: dict[str, object] = {"image": path.name}
        for (model, variant), runner in runners.items():
            prediction = classify(runner, path, name=path.name, k=1)
            top = prediction.top_k[0]
            row[f"{model} {variant.value}"] = f"{top.label}, {prediction.timing.inference:.1f} ms"
        image_rows.append(row)

    if args.format == "json":
        print(
            json.dumps(
                {
                    "machine": machine(),
                    "simd": list(simd()),
                    "int8_outlook": int8_outlook(simd()),
                    "results": [r.as_row() for r in results],
                    "targets": [_target_row(t) for t in targets],
                    "images": image_rows,
                },
                indent=2,
            )
        )
        return 0
    print(render([r.as_row() for r in results], args.format))
    if args.format == "markdown":
        print(f"\n{machine()}; latency = Runner.predict on one preprocessed photo")
        print(int8_outlook(simd()))
        if targets:
            print("\n" + render([_target_row(t) for t in targets], "markdown"))
        if image_rows:
            print("\n" + render(image_rows, "markdown"))
    return 0


def _target_row(target: bench.Target) -> dict[str, object]:
    return {
        "target": target.name,
        "measured": f"{target.value:.3g}{target.unit}",
        "limit": f"≤ {target.limit:g}{target.unit}",
        "met": "yes" if target.met else "NO",
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    spec = resolve_model(args)
    _, variants = resolve(spec, args.variants)
    dataset = _labelled_set(args.data, spec.labels)
    runners = dict(zip(variants, load_runners(spec, variants, progress=_progress), strict=True))
    report = evaluate(spec, runners, dataset)
    for problem in report.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    summary = [s.as_row() for s in report.scores]
    if args.format == "json":
        print(
            json.dumps(
                {
                    "model": report.model,
                    "images": report.images,
                    "reference": report.reference.value,
                    "summary": summary,
                    "per_class": report.per_class_rows(),
                    "confusion": {s.variant.value: s.confusion.tolist() for s in report.scores},
                    "confusion_labels": [spec.labels[i] for i in report.classes] + ["other"],
                    "problems": list(report.problems),
                },
                indent=2,
            )
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


COMMANDS = {
    "models": cmd_models,
    "predict": cmd_predict,
    "convert": cmd_convert,
    "quantize": cmd_quantize,
    "layers": cmd_layers,
    "autoquant": cmd_autoquant,
    "bench": cmd_bench,
    "evaluate": cmd_evaluate,
}


@contextlib.contextmanager
def _native_stderr_to_devnull() -> Iterator[None]:
    """Keep TensorFlow's and LiteRT's C++ log lines off the terminal.

    They write to file descriptor 2 directly (absl start-up lines, "Created
    TensorFlow Lite XNNPACK delegate"), which would bury the one-line error
    contract. Python's ``sys.stderr`` keeps the real terminal; set
    QUANTLENS_NATIVE_LOGS=1 to see the native lines.
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
    sys.stderr = open(saved_fd, "w", buffering=1, closefd=False)  # noqa: SIM115
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = saved_stream
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
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
