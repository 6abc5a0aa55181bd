"""``bench``: latency, load time, size and memory of each variant, like TFLite's benchmark_model.

It measures every chosen model x variant, then, for the default model's int8
file, LiteRT's own ``litert-benchmark`` on the same file, the project runner
against a bare LiteRT loop, and one image split into decode, preprocess and
inference (the sample photo, a 12 MP JPEG, and each of ``--images``); then the
project's targets as ratios measured in the same run, and with ``--images`` an
answer table (top-1 and time per image). ``--format`` prints a Markdown (with
the machine and its int8 outlook) or CSV table; ``--json`` (same as ``--format
json``) prints all of it as one object.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
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
from inference.core.errors import InferenceError, InputError
from inference.core.machine import int8_outlook, machine, simd
from inference.core.specs import AnyVariant, ModelSpec, Variant
from inference.engine.runners import LiteRTRunner, Runner
from inference.formats.images import image_files
from inference.pipeline import classify
from inference.registry.catalog import resolve
from inference.registry.zoo import DEFAULT_MODEL

LITERT_BENCHMARK = "litert-benchmark"
"""LiteRT's own benchmark, a command the ai-edge-litert wheel installs (CompiledModel API)."""
LITERT_BENCHMARK_TIMEOUT_S = 300
STAGE_RUNS = 20
"""Runs per image for the stage breakdown (a 12 MP decode takes 15-50 ms)."""


def register(subcommands: Subcommands) -> None:
    parser = add_command(subcommands, "bench", help="latency, size and memory per variant")
    parser.add_argument("--models", default=DEFAULT_MODEL, help="comma-separated zoo names")
    parser.add_argument("--variants", default="all", help="comma-separated variants, or 'all'")
    parser.add_argument("--images", type=Path, default=None, help="also classify these images")
    parser.add_argument("--runs", type=positive_int, default=50, help="timed runs (default 50)")
    parser.add_argument(
        "--warmup", type=positive_int, default=5, help="least discarded runs (default 5)"
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=benchmark.WARMUP_SECONDS,
        help=f"least warm-up time per variant (default {benchmark.WARMUP_SECONDS} s, "
        "as benchmark_model's --warmup_min_secs)",
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="LiteRT threads")
    format_arguments(parser)


def run(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    picked = [resolve(name, args.variants) for name in names]
    images = _image_files(args.images) if args.images else []
    jobs = [(spec, v) for spec, variants in picked for v in variants]

    references: list[LiteRTBenchmark | None] = []

    def announce(spec: ModelSpec, variant: AnyVariant, fraction: float) -> None:
        print(f"bench: {spec.name} {variant.value}", file=sys.stderr, flush=True)

    def compare(result: benchmark.BenchResult, runner: Runner) -> None:
        # Right after our int8 runs, while the machine is as it was, and sampled as they
        # were: the same file, runs, warm-ups and threads.
        ours = (result.model, result.variant) == (DEFAULT_MODEL, Variant.INT8)
        if ours and isinstance(runner, LiteRTRunner):
            references.append(_reference(runner, args.runs, result.warmup_runs))

    measured = benchmark.run_benchmarks(
        jobs,
        runs=args.runs,
        warmup=args.warmup,
        warmup_seconds=args.warmup_seconds,
        threads=args.threads,
        on_job=announce,
        after_job=compare,
        convert_progress=progress,
    )
    results = [result for result, _ in measured]
    runners = {(r.model, r.variant): runner for r, runner in measured}
    runner_vs_bare = twelve_mp_ms = None
    reference = references[0] if references else None
    stages: list[benchmark.StageTimings] = []
    stage_runs = min(args.runs, STAGE_RUNS)
    default_int8 = runners.get((DEFAULT_MODEL, Variant.INT8))
    if isinstance(default_int8, LiteRTRunner):
        runner_vs_bare = benchmark.runner_overhead(default_int8, args.runs)
        stages = [
            benchmark.stage_timings(default_int8, image, runs=stage_runs, name=name)
            for name, image in [
                (benchmark.SAMPLE_IMAGE.name, benchmark.SAMPLE_IMAGE),
                ("12 MP JPEG (4000x3000)", benchmark.twelve_megapixel_jpeg()),
                *((path.name, path) for path in images),
            ]
        ]
        twelve_mp_ms = stages[1].total_ms
    targets = benchmark.targets(
        results,
        runner_vs_bare=runner_vs_bare,
        twelve_mp_ms=twelve_mp_ms,
        litert_median_ms=reference.median_ms if reference else None,
    )
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
                "litert_benchmark": reference.as_dict() if reference else None,
                "targets": [_target_row(t) for t in targets],
                "stages": [s.as_row() for s in stages],
                "images": image_rows,
            }
        )
        return 0
    print(render([r.as_row() for r in results], args.format))
    if args.format == "markdown":
        print(f"\n{machine()}; latency = Runner.predict on one preprocessed photo")
        print(int8_outlook(simd()))
        if reference:
            print(
                f"\n`{LITERT_BENCHMARK}` on the same int8 file ({reference.runs} runs, "
                f"{reference.warmup_runs} warm-ups, {reference.threads} threads): median "
                f"{reference.median_ms:.3f} ms, average {reference.figures_ms.get('avg', 0):.3f} ms"
            )
        if targets:
            print("\n" + render([_target_row(t) for t in targets], "markdown"))
        if stages:
            print(f"\nStages, {DEFAULT_MODEL} int8 (median of {stage_runs} runs each):\n")
            print(render([s.as_row() for s in stages], "markdown"))
        if image_rows:
            print("\n" + render(image_rows, "markdown"))
    return 0


@dataclass(frozen=True)
class LiteRTBenchmark:
    """LiteRT's own ``litert-benchmark`` on one file (CompiledModel API, random input)."""

    command: str
    model: str
    threads: int
    runs: int
    warmup_runs: int
    figures_ms: dict[str, float]
    """Every ``Inference (...)`` figure it printed: avg, min, max, median, std, p5, p95."""

    @property
    def median_ms(self) -> float:
        """The printed median (the average, where a version prints no median)."""
        return self.figures_ms.get("median", self.figures_ms.get("avg", 0.0))

    def as_dict(self) -> dict[str, object]:
        fields = {k: v for k, v in vars(self).items() if k != "figures_ms"}
        figures = {f"{k}_ms": v for k, v in self.figures_ms.items()}
        return {**fields, "median_ms": self.median_ms, **figures}


_LITERT_FIGURE = re.compile(r"^\s*Inference \((\w+)\):\s*([0-9.]+)\s*ms", re.MULTILINE)


def parse_litert_benchmark(text: str) -> dict[str, float]:
    """The ``Inference (name): N ms`` figures litert-benchmark prints, by name, in ms.

    Its results block goes to stdout (its logs go to stderr):
    ``Inference (avg): 2.44 ms (50 runs)``, ``Inference (median): 2.42 ms``, ...

    Raises:
        ValueError: Neither a median nor an average in ``text``.
    """
    figures = {name: float(value) for name, value in _LITERT_FIGURE.findall(text)}
    if "median" not in figures and "avg" not in figures:
        tail = " ".join(text.strip().splitlines()[-3:])[-200:]
        raise ValueError(
            f"expected 'Inference (median): N ms' in {LITERT_BENCHMARK}'s output; received {tail!r}"
        )
    return figures


def litert_benchmark_command() -> Path | None:
    """``litert-benchmark`` beside this Python (its venv's ``bin``), else on PATH, else None."""
    beside = Path(sys.executable).with_name(LITERT_BENCHMARK)
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(LITERT_BENCHMARK)
    return Path(found) if found else None


def litert_benchmark(
    path: Path, *, runs: int, warmup: int, threads: int, command: Path | None = None
) -> LiteRTBenchmark | None:
    """Run ``litert-benchmark`` on ``path`` in a child process; None if it is not installed.

    Raises:
        InferenceError: It failed, timed out, or printed no timing.
    """
    command = command or litert_benchmark_command()
    if command is None:
        return None
    args = [str(command), "--model", str(path), "--num_runs", str(runs)]
    args += ["--warmup_runs", str(warmup), "--num_threads", str(threads)]
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=LITERT_BENCHMARK_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise InferenceError(f"{LITERT_BENCHMARK} exited with {done.returncode}: {last}")
        figures = parse_litert_benchmark(done.stdout)
    except subprocess.TimeoutExpired:
        raise InferenceError(f"{LITERT_BENCHMARK}: over {LITERT_BENCHMARK_TIMEOUT_S} s") from None
    except ValueError as exc:
        raise InferenceError(str(exc)) from None
    return LiteRTBenchmark(str(command), str(path), threads, runs, warmup, figures)


def _reference(runner: LiteRTRunner, runs: int, warmup: int) -> LiteRTBenchmark | None:
    """litert-benchmark on the runner's file, or None with one line on stderr saying why."""
    try:
        found = litert_benchmark(runner.path, runs=runs, warmup=warmup, threads=runner.threads)
    except InferenceError as exc:
        print(f"bench: {LITERT_BENCHMARK} skipped: {exc}", file=sys.stderr)
        return None
    if found is None:
        print(
            f"bench: {LITERT_BENCHMARK} not found beside {sys.executable} or on PATH "
            "(it comes with ai-edge-litert); its comparison is skipped",
            file=sys.stderr,
        )
    return found


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: expected a folder of images")
    files = image_files(folder)
    if not files:
        raise InputError(f"{folder}: no image files (.jpg, .png, ...) found")
    return files


def _target_row(target: benchmark.Target) -> dict[str, object]:
    # Three decimals for ratios: a NO beside a value that rounds to its limit is clear.
    digits = ".3f" if target.unit == "×" else ".3g"
    return {
        "target": target.name,
        "measured": f"{target.value:{digits}}{target.unit}",
        "limit": f"≤ {target.limit:g}{target.unit}",
        "met": "yes" if target.met else "NO",
    }
