"""``bench``: latency, load time, size and memory of each variant, like TFLite's benchmark_model.

It measures every chosen model x variant, then the project's targets as ratios
measured in the same run, and with ``--images`` an answer table (top-1 and time
per image). ``--format`` prints a Markdown (with the machine and its int8
outlook) or CSV table; ``--json`` (same as ``--format json``) prints all of it
as one object.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.analysis import benchmark
from inference.cli.common import (
    Subcommands,
    add_command,
    format_arguments,
    positive_int,
    print_json,
    progress,
    render,
)
from inference.core.errors import InputError
from inference.core.machine import int8_outlook, machine, simd
from inference.core.specs import AnyVariant, ModelSpec, Variant
from inference.formats.images import image_files
from inference.pipeline import classify
from inference.registry.catalog import resolve
from inference.registry.zoo import DEFAULT_MODEL


def register(subcommands: Subcommands) -> None:
    parser = add_command(subcommands, "bench", help="latency, size and memory per variant")
    parser.add_argument("--models", default=DEFAULT_MODEL, help="comma-separated zoo names")
    parser.add_argument("--variants", default="all", help="comma-separated variants, or 'all'")
    parser.add_argument("--images", type=Path, default=None, help="also classify these images")
    parser.add_argument("--runs", type=positive_int, default=50, help="timed runs (default 50)")
    parser.add_argument("--warmup", type=positive_int, default=5, help="discarded runs (default 5)")
    parser.add_argument("--threads", type=positive_int, default=None, help="LiteRT threads")
    format_arguments(parser)


def run(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    picked = [resolve(name, args.variants) for name in names]
    images = _image_files(args.images) if args.images else []
    jobs = [(spec, v) for spec, variants in picked for v in variants]

    def announce(spec: ModelSpec, variant: AnyVariant, fraction: float) -> None:
        print(f"bench: {spec.name} {variant.value}", file=sys.stderr, flush=True)

    measured = benchmark.run_benchmarks(
        jobs,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        on_job=announce,
        convert_progress=progress,
    )
    results = [result for result, _ in measured]
    runners = {(r.model, r.variant): runner for r, runner in measured}
    runner_vs_bare = twelve_mp_ms = None
    default_int8 = runners.get((DEFAULT_MODEL, Variant.INT8))
    if default_int8 is not None:
        runner_vs_bare = benchmark.runner_overhead(default_int8, args.runs)
        twelve_mp_ms = benchmark.twelve_megapixel_ms(default_int8, min(args.runs, 20))
    targets = benchmark.targets(results, runner_vs_bare=runner_vs_bare, twelve_mp_ms=twelve_mp_ms)
    image_rows = []
    for path in images:
        row: dict[str, object] = {"image": path.name}
        for (model, variant), runner in runners.items():
            prediction = classify(runner, path, name=path.name, k=1)
            top = prediction.top_k[0]
            row[f"{model} {variant.value}"] = f"{top.label}, {prediction.timing.inference:.1f} ms"
        image_rows.append(row)

    if args.format == "json":
        print_json(
            {
                "machine": machine(),
                "simd": list(simd()),
                "int8_outlook": int8_outlook(simd()),
                "results": [r.as_row() for r in results],
                "targets": [_target_row(t) for t in targets],
                "images": image_rows,
            }
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


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: expected a folder of images")
    files = image_files(folder)
    if not files:
        raise InputError(f"{folder}: no image files (.jpg, .png, ...) found")
    return files


def _target_row(target: benchmark.Target) -> dict[str, object]:
    return {
        "target": target.name,
        "measured": f"{target.value:.3g}{target.unit}",
        "limit": f"≤ {target.limit:g}{target.unit}",
        "met": "yes" if target.met else "NO",
    }
