"""Latency, size and memory per variant, measured the way TFLite's benchmark_model does.

For each model and variant: the load time, the first run on its own, warm-up
runs that are discarded (at least ``warmup`` runs and half a second, as
benchmark_model's ``--warmup_min_secs``), then N back-to-back timed runs
summarised as median, p90, min, max and standard deviation, with the thread
count stated and the achieved GMAC/s (the network's multiply-adds over the
median). :func:`stage_timings` splits one image's classification into decode,
preprocess and inference. Targets are ratios from one run on one machine, so
they hold wherever they are measured; they are printed, not asserted in tests.
"""

from __future__ import annotations

import functools
import io
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from inference.core.child_process import Progress
from inference.core.machine import default_threads, resident_bytes
from inference.core.paths import SAMPLES_DIR
from inference.core.specs import AnyVariant, ModelSpec, Variant
from inference.engine.convert import conversion_record, ensure_variants
from inference.engine.runners import LiteRTRunner, Runner
from inference.formats.images import ImageSource, decode_image, preprocess
from inference.formats.tflite_file import open_interpreter
from inference.pipeline import classify
from inference.registry.loading import load_runner
from inference.registry.zoo import DEFAULT_MODEL

__all__ = [
    "BenchResult",
    "LatencyStats",
    "StageTimings",
    "Target",
    "bare_invoke_samples",
    "benchmark",
    "count_macs",
    "run_benchmarks",
    "runner_overhead",
    "stage_timings",
    "targets",
    "twelve_megapixel_jpeg",
]

SAMPLE_IMAGE = SAMPLES_DIR / "chelsea.jpg"
TWELVE_MEGAPIXELS = (4000, 3000)
WARMUP_SECONDS = 0.5
"""Least warm-up time per variant (benchmark_model's ``--warmup_min_secs``): the first
runs after loading are 7-18 % slow, and by how many depends on the machine."""


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed runs, in milliseconds."""

    runs: int
    median: float
    p90: float
    min: float
    max: float
    mean: float
    std: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Summarise samples; p90 interpolates linearly, std is the population value.

        Raises:
            ValueError: No samples.
        """
        if not samples_ms:
            raise ValueError("expected at least one timed run; received none")
        values = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            runs=len(values),
            median=float(np.median(values)),
            p90=float(np.percentile(values, 90)),
            min=float(values.min()),
            max=float(values.max()),
            mean=float(values.mean()),
            std=float(values.std()),
        )


@dataclass(frozen=True)
class BenchResult:
    """One model variant's costs."""

    model: str
    variant: AnyVariant
    threads: int
    load_ms: float
    first_ms: float
    warmup_runs: int
    latency: LatencyStats
    size_bytes: int
    rss_delta_bytes: int
    macs: int | None
    samples_ms: tuple[float, ...] = field(repr=False, default=())
    convert_seconds: float | None = None
    """How long making this variant's file took (its cache sidecar); None for Keras or a
    file someone brought."""

    @property
    def gmacs_per_second(self) -> float | None:
        if not self.macs or self.latency.median <= 0:
            return None
        return self.macs / 1e9 / (self.latency.median / 1e3)

    def as_row(self) -> dict[str, object]:
        gmacs = self.gmacs_per_second
        return {
            "model": self.model,
            "variant": self.variant.value,
            "threads": self.threads,
            "size MB": round(self.size_bytes / 1e6, 2),
            "convert s": self.convert_seconds,
            "RSS +MB": round(self.rss_delta_bytes / 1e6, 1),
            "load ms": round(self.load_ms, 1),
            "first ms": round(self.first_ms, 2),
            "runs": self.latency.runs,
            "median ms": round(self.latency.median, 3),
            "p90 ms": round(self.latency.p90, 3),
            "min ms": round(self.latency.min, 3),
            "max ms": round(self.latency.max, 3),
            "std ms": round(self.latency.std, 3),
            "GMAC/s": round(gmacs, 2) if gmacs is not None else None,
        }


@dataclass(frozen=True)
class Target:
    """A performance target: a measured value against its limit."""

    name: str
    value: float
    limit: float
    unit: str = "×"

    @property
    def met(self) -> bool:
        return self.value <= self.limit


def count_macs(path: Path) -> int:
    """Multiply-accumulates of one inference, from a ``.tflite`` file's conv and dense ops."""
    interpreter = open_interpreter(path)
    shapes = {
        t["index"]: tuple(int(d) for d in t["shape"]) for t in interpreter.get_tensor_details()
    }
    total = 0
    for op in interpreter._get_ops_details():  # the public API has no op list
        name = op["op_name"]
        inputs = [i for i in op["inputs"] if i >= 0]
        if not op["outputs"] or len(inputs) < 2:
            continue
        out = shapes.get(op["outputs"][0], ())
        weights = shapes.get(inputs[1], ())
        if name == "CONV_2D" and len(out) == 4 and len(weights) == 4:
            # weights (out_c, kh, kw, in_c)
            total += math.prod(out) * weights[1] * weights[2] * weights[3]
        elif name == "DEPTHWISE_CONV_2D" and len(out) == 4 and len(weights) == 4:
            # weights (1, kh, kw, channels)
            total += math.prod(out) * weights[1] * weights[2]
        elif name == "FULLY_CONNECTED" and len(weights) == 2:
            total += math.prod(out) * weights[1]
    return total


def _sample_batch(spec: ModelSpec, image: Path | None) -> np.ndarray:
    """A real photo, preprocessed: timings on zeros can flatter sparse kernels."""
    path = image or SAMPLE_IMAGE
    return preprocess(
        decode_image(path, color_mode=spec.preprocessing.color_mode), spec.preprocessing
    )


def _time_calls(call: Callable[[], object], runs: int) -> list[float]:
    """Milliseconds of ``runs`` back-to-back calls."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _warm_up(call: Callable[[], object], runs: int, seconds: float) -> int:
    """Call ``call`` at least ``runs`` times and for at least ``seconds``; return the count."""
    done, end = 0, time.perf_counter() + seconds
    while done < runs or time.perf_counter() < end:
        call()
        done += 1
    return done


def benchmark(
    spec: ModelSpec,
    variant: AnyVariant,
    *,
    runs: int = 50,
    warmup: int = 5,
    warmup_seconds: float = WARMUP_SECONDS,
    threads: int | None = None,
    image: Path | None = None,
    macs: int | None = None,
) -> tuple[BenchResult, Runner]:
    """Measure one variant; returns the result and the loaded runner (for further use).

    The variant must be converted already (see :func:`run_benchmarks`) so
    that load time is loading, not conversion. Warm-up lasts at least
    ``warmup`` runs and ``warmup_seconds``; the result records how many ran.
    """
    threads = threads or default_threads()
    batch = _sample_batch(spec, image)
    rss_before = resident_bytes()
    start = time.perf_counter()
    runner = load_runner(spec, variant, threads=threads, warmup=False)
    load_ms = (time.perf_counter() - start) * 1e3
    first_ms = _time_calls(lambda: runner.predict(batch), 1)[0]
    rss_delta = max(0, resident_bytes() - rss_before)
    warmed = _warm_up(lambda: runner.predict(batch), warmup, warmup_seconds)
    samples = _time_calls(lambda: runner.predict(batch), runs)
    result = BenchResult(
        model=spec.name,
        variant=variant,
        threads=threads if variant.is_tflite else 0,
        load_ms=load_ms,
        first_ms=first_ms,
        warmup_runs=warmed,
        latency=LatencyStats.from_samples(samples),
        size_bytes=runner.size_bytes,
        rss_delta_bytes=rss_delta,
        macs=macs,
        samples_ms=tuple(samples),
        convert_seconds=(
            conversion_record(runner.path).get("seconds")
            if isinstance(runner, LiteRTRunner)
            else None
        ),
    )
    return result, runner


def bare_invoke_samples(runner: LiteRTRunner, batch: np.ndarray, runs: int) -> list[float]:
    """Bare set/invoke/get on the runner's own interpreter, input quantized beforehand."""
    raw = runner.quantize_input(batch)
    return _time_calls(lambda: runner.invoke_raw(raw), runs)


def runner_overhead(runner: LiteRTRunner, runs: int, *, blocks: int = 3) -> float:
    """Median of ``runner.predict`` over the median of a bare LiteRT loop, same file and input.

    Both run on the runner's own interpreter, so the only difference is what
    ``predict`` adds, in alternating blocks so that a change in the machine's
    load falls on both.
    """
    batch = _sample_batch(runner.spec, None)
    per_block = max(1, runs // blocks)
    bare: list[float] = []
    ours: list[float] = []
    for _ in range(blocks):
        bare += bare_invoke_samples(runner, batch, per_block)
        ours += _time_calls(lambda: runner.predict(batch), per_block)
    return median(ours) / median(bare)


@dataclass(frozen=True)
class StageTimings:
    """One image through the pipeline: median milliseconds of each stage and of the whole."""

    image: str
    decode_ms: float
    preprocess_ms: float
    inference_ms: float
    total_ms: float
    """Median wall-clock of whole classifications (the stages, top-k and the calls between)."""

    @property
    def images_per_second(self) -> float:
        return 1e3 / self.total_ms if self.total_ms > 0 else 0.0

    def as_row(self) -> dict[str, object]:
        return {
            "image": self.image,
            "decode_ms": round(self.decode_ms, 3),
            "preprocess_ms": round(self.preprocess_ms, 3),
            "inference_ms": round(self.inference_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "images_per_second": round(self.images_per_second, 1),
        }


def stage_timings(
    runner: Runner, image: ImageSource, *, runs: int = 20, name: str | None = None
) -> StageTimings:
    """Decode, preprocess and inference of one image file, each the median over ``runs``.

    Each run is :func:`inference.pipeline.classify` on the encoded bytes (read
    once, so disk reads are not counted), which times its own stages; decode
    uses the JPEG draft size, as every front end does. One untimed run first.
    """
    label = name or (Path(image).name if isinstance(image, str | Path) else "image")
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    classify(runner, data, name=label)
    stages: list[tuple[float, float, float]] = []
    totals: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        timing = classify(runner, data, name=label).timing
        totals.append((time.perf_counter() - start) * 1e3)
        stages.append((timing.decode, timing.preprocess, timing.inference))
    decode_ms, preprocess_ms, inference_ms = (
        median(column) for column in zip(*stages, strict=True)
    )
    return StageTimings(label, decode_ms, preprocess_ms, inference_ms, median(totals))


def twelve_megapixel_jpeg(image: Path | None = None) -> bytes:
    """A 4000x3000 JPEG made from a real photo, as a phone would send it."""
    photo = Image.open(image or SAMPLE_IMAGE).convert("RGB").resize(TWELVE_MEGAPIXELS)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def targets(
    results: Sequence[BenchResult],
    *,
    runner_vs_bare: float | None = None,
    twelve_mp_ms: float | None = None,
    litert_median_ms: float | None = None,
    model: str = DEFAULT_MODEL,
) -> list[Target]:
    """The project's targets (set for the default model) that these results can speak to.

    ``litert_median_ms`` is LiteRT's own ``litert-benchmark`` median on the same int8
    file, measured in the same run (``bench`` runs it).
    """
    by_key = {(r.model, r.variant): r for r in results}
    int8 = by_key.get((model, Variant.INT8))
    fp32 = by_key.get((model, Variant.FP32))
    original = by_key.get((model, Variant.ORIGINAL))
    found: list[Target] = []
    if int8 and fp32:
        ratio = int8.latency.median / fp32.latency.median
        found.append(Target("lite0 int8 median / TFLite fp32 median", ratio, 0.5))
    if int8 and original:
        ratio = int8.latency.median / original.latency.median
        found.append(Target("lite0 int8 median / Keras original median", ratio, 0.2))
    if int8 and litert_median_ms:
        ratio = int8.latency.median / litert_median_ms
        found.append(Target("bench int8 median / litert-benchmark median", ratio, 1.10))
    if runner_vs_bare is not None:
        name = "project runner / bare LiteRT invoke (int8 median)"
        found.append(Target(name, runner_vs_bare, 1.15))
    if twelve_mp_ms is not None:
        found.append(Target("12 MP JPEG to top-k, int8 (median)", twelve_mp_ms, 60.0, " ms"))
    return found


def median_ms(runner: Runner, batch: np.ndarray, runs: int = 20) -> float:
    """Median milliseconds of ``runner.predict(batch)`` after one untimed call."""
    runner.predict(batch)
    return median(_time_calls(lambda: runner.predict(batch), runs))


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def run_benchmarks(
    jobs: Sequence[tuple[ModelSpec, AnyVariant]],
    *,
    runs: int = 50,
    warmup: int = 5,
    warmup_seconds: float = WARMUP_SECONDS,
    threads: int | None = None,
    on_job: Callable[[ModelSpec, AnyVariant, float], None] | None = None,
    on_error: Callable[[ModelSpec, AnyVariant, Exception], None] | None = None,
    after_job: Callable[[BenchResult, Runner], None] | None = None,
    convert_progress: Progress | None = None,
) -> list[tuple[BenchResult, Runner]]:
    """Benchmark each (model, variant): convert what is missing first, then measure.

    The CLI's ``bench`` and the Benchmark page both run this. MACs come from
    the model's float file (converted if needed) or, for a ``.tflite`` someone
    brought, from that file. The runners stay loaded for the caller to reuse
    or close.

    Args:
        jobs: Pairs to measure, in order.
        runs: Timed runs per job, as for :func:`benchmark`.
        warmup: Least discarded runs per job.
        warmup_seconds: Least warm-up time per job.
        threads: LiteRT threads (default: every core).
        on_job: Called with (spec, variant, fraction done) before each job.
        on_error: Called instead of raising when a job fails (a page shows it and
            goes on); the other jobs still run. Without it, the first failure raises.
        after_job: Called with each result and its runner as soon as it is measured
            (``bench`` runs litert-benchmark there, while the machine is as it was).
        convert_progress: Conversion progress, as for ``ensure_variants``.
    """
    measure = functools.partial(
        benchmark, runs=runs, warmup=warmup, warmup_seconds=warmup_seconds, threads=threads
    )
    by_model: dict[str, list[AnyVariant]] = {}
    specs: dict[str, ModelSpec] = {}
    for spec, variant in jobs:
        specs.setdefault(spec.name, spec)
        by_model.setdefault(spec.name, []).append(variant)
    macs: dict[str, int | None] = {}
    measured: list[tuple[BenchResult, Runner]] = []
    done = 0
    for name, variants in by_model.items():
        spec = specs[name]
        try:
            # MACs are counted on the float file where there is one (quantized files
            # add QUANTIZE/DEQUANTIZE ops that do no multiply-adds).
            reference = [Variant.FP32] if Variant.FP32 in spec.variants else []
            convertible = sorted(
                {*[v for v in variants if v.is_tflite], *reference}, key=spec.variants.index
            )
            paths = ensure_variants(spec, convertible, progress=convert_progress)
            macs[name] = count_macs(paths[convertible[0]])
        except Exception as exc:
            if on_error is None:
                raise
            for variant in variants:
                on_error(spec, variant, exc)
            done += len(variants)
            continue
        for variant in variants:
            if on_job:
                on_job(spec, variant, done / len(jobs))
            done += 1
            try:
                measured.append(measure(spec, variant, macs=macs[name]))
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(spec, variant, exc)
                continue
            if after_job:
                after_job(*measured[-1])
    return measured
