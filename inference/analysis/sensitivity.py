"""The sensitivity scan: quantize one op (or one block) at a time, the rest float, and measure.

It is the ground truth the one-pass report's ranking (each op's own error,
:mod:`inference.analysis.layer_report`) is checked against: for every target, the model with
*only* that target quantized by the variant's recipe is run on the scan's
images, and its final output is compared with the float model's (SNR, top-1
agreement, and with labels the accuracy drop). The target whose quantization
alone hurts the output most is rank 1.

The ranges are calibrated once, with the full recipe, and reused for every
target; the targets are shared among parallel child processes
(:mod:`inference.engine.workers.sensitivity`), each building and running its share.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from inference.analysis.layer_report import LayerReport
from inference.core.child_process import ChildFailed, Progress, run_child
from inference.core.errors import ConversionError, InputError
from inference.core.machine import default_threads
from inference.core.paths import cache_dir
from inference.core.specs import ModelSpec
from inference.engine.shards import Engine
from inference.formats.calibration import calibration_images
from inference.formats.recipes import Recipe
from inference.formats.tflite_file import model_outputs

__all__ = [
    "MAX_SCAN_IMAGES",
    "ScanRecord",
    "SensitivityScan",
    "ranking_agreement",
    "scan_targets",
    "sensitivity_scan",
]

MAX_SCAN_IMAGES = 2000
"""Images a scan runs every target on (each target costs one pass over them)."""
SCAN_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Target:
    """What one scan step quantizes: one op (its output tensor), or the ops of one block."""

    name: str
    regex: str
    index: int
    """The first op's position in the float model's execution order."""
    op: str
    tensor: str


@dataclass(frozen=True)
class ScanRecord:
    """The model with only ``target`` quantized, against the float model."""

    index: int
    tensor: str
    op: str
    rank: int
    """1 = the target whose quantization alone hurts the output most."""
    output_snr_db: float
    agreement: float
    """Share of images whose top-1 equals the float model's."""
    accuracy_drop: float | None = None
    """Points of top-1 accuracy lost against the float model (with labels only)."""

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "index": self.index,
            "tensor": self.tensor,
            "op": self.op,
            "rank": self.rank,
            "output_snr_db": round(self.output_snr_db, 4),
            "agreement": round(self.agreement, 6),
        }
        if self.accuracy_drop is not None:
            record["accuracy_drop"] = round(self.accuracy_drop, 4)
        return record


@dataclass(frozen=True)
class SensitivityScan:
    records: tuple[ScanRecord, ...]
    """In rank order."""
    images: int
    recipe: str
    workers: int
    seconds: float
    float_accuracy: float | None = None
    engine: str = ""
    """Where the targets ran: local worker processes, or a Ray cluster and its nodes."""
    nodes: dict[str, int] = dataclasses.field(default_factory=dict)
    """Targets each Ray node measured (empty for a local scan)."""

    def rank_of(self, tensor: str) -> int | None:
        return next((r.rank for r in self.records if r.tensor == tensor), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "images": self.images,
            "workers": self.workers,
            "engine": self.engine,
            "nodes": [{"node": node, "targets": count} for node, count in self.nodes.items()],
            "seconds": round(self.seconds, 2),
            "float_accuracy": self.float_accuracy,
            "records": [r.as_dict() for r in self.records],
        }


def _float_ops(float_path: Path) -> list[tuple[int, str, str]]:
    """(position, op type, first output tensor name) of each op, in execution order."""
    interpreter = Interpreter(
        model_path=str(float_path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    names = {int(t["index"]): t["name"] for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    return [
        (position, op["op_name"], names[int(op["outputs"][0])])
        for position, op in enumerate(ops)
        if len(op["outputs"])
    ]


def scan_targets(float_path: Path, block: str | None = None) -> list[Target]:
    r"""One target per op, or, with ``block`` (a regex with one group), one per block.

    ``block=r"blocks\.(\d+)\."`` groups EfficientNet-Lite's ops by block; ops
    the regex does not find stay targets of their own.

    Raises:
        InputError: ``block`` does not compile or has no group.
    """
    ops = _float_ops(float_path)
    if block is None:
        return [
            Target(tensor, f"(?:^|;){re.escape(tensor)};", position, op, tensor)
            for position, op, tensor in ops
        ]
    try:
        pattern = re.compile(block)
    except re.error as exc:
        raise InputError(f"--block {block!r} is not a regular expression ({exc})") from None
    if pattern.groups < 1:
        raise InputError(f"--block {block!r}: expected one group that names the block")
    groups: dict[str, list[tuple[int, str, str]]] = {}
    for position, op, tensor in ops:
        found = pattern.search(tensor)
        groups.setdefault(found.group(1) if found else tensor, []).append((position, op, tensor))
    targets = []
    for name, members in groups.items():
        position, op, tensor = members[0]
        # The members' own tensors, exactly: a block's name may be part of another's.
        exact = "|".join(re.escape(m[2]) for m in members)
        regex = f"(?:^|;)(?:{exact});"
        if len(members) == 1:
            targets.append(Target(tensor, regex, position, op, tensor))
        else:
            kinds = "+".join(dict.fromkeys(m[1] for m in members))
            targets.append(Target(f"block {name}", regex, position, kinds, f"block {name}"))
    return targets


def sensitivity_scan(
    spec: ModelSpec,
    float_path: Path,
    recipe: Recipe,
    inputs: Sequence[np.ndarray],
    labels: Sequence[int] | None = None,
    *,
    block: str | None = None,
    workers: int | None = None,
    calibration: Sequence[Path] | None = None,
    progress: Progress | None = None,
    engine: Engine | None = None,
) -> SensitivityScan:
    """Scan every op (or block) of ``float_path`` under ``recipe`` on ``inputs``.

    Args:
        spec: The model (its preprocessing calibrates the recipe).
        float_path: The float ``.tflite``.
        recipe: The variant's recipe; each target gets exactly its rules.
        inputs: Preprocessed ``(1, H, W, C)`` images.
        labels: Their classes, for the accuracy drop.
        block: A regex with one group naming a block (see :func:`scan_targets`).
        workers: Parallel child processes (default: one per core, or the pool's).
        calibration: Calibration images (default: the model's set).
        progress: Called with (message, fraction done).
        engine: A Ray engine runs each target as a task on the cluster; a local pool
            sets the number of child processes.

    Raises:
        InputError: No images, too many, or a bad ``block``.
        ConversionError: A child failed.
    """
    if not inputs:
        raise InputError("expected at least one image to scan on")
    if len(inputs) > MAX_SCAN_IMAGES:
        raise InputError(
            f"{len(inputs)} images; a scan runs every op on each, so at most "
            f"{MAX_SCAN_IMAGES} are accepted"
        )
    start = time.perf_counter()
    targets = scan_targets(float_path, block)
    on_ray = engine is not None and engine.kind == "ray"
    if engine is not None and not on_ray:
        workers = workers or engine.workers
    workers = max(1, min(workers or default_threads(), len(targets)))
    # In the cache folder: on a cluster, a folder every node can read (as the set is).
    cache_dir().mkdir(parents=True, exist_ok=True)
    nodes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="scan-", dir=cache_dir()) as folder:
        work = Path(folder)
        # The images go to disk one by one (the children map them): 2 000 photos at
        # 224x224 are 1.2 GB, more than a page may hold.
        first = np.asarray(inputs[0], np.float32)
        batch = np.lib.format.open_memmap(
            work / "inputs.npy", mode="w+", dtype=np.float32, shape=(len(inputs), *first.shape[1:])
        )
        for row, image in enumerate(inputs):
            batch[row] = np.asarray(image, np.float32)[0]
        batch.flush()
        reference = model_outputs(float_path.read_bytes(), batch)
        float_correct = None if labels is None else int(np.sum(reference.argmax(1) == labels))
        np.save(work / "reference.npy", reference)
        if labels is not None:
            np.save(work / "labels.npy", np.asarray(labels, np.int64))
        base = {"float": str(float_path), "rules": recipe.rules, "ranges": recipe.ranges}
        images = [str(p) for p in (calibration or calibration_images(_calibration_dirs(spec)))]
        calibrated = _child(
            "calibrate",
            {
                **base,
                "job": "calibrate",
                "output": str(work / "ranges.pkl"),
                "preprocessing": dataclasses.asdict(spec.preprocessing),
                "calibration": images,
            },
            progress and (lambda m, f: progress(m, 0.0)),
        )["calibrated"]
        done = [0] * workers
        lock = threading.Lock()

        def report(worker: int, message: str, count: float) -> None:
            with lock:
                done[worker] = int(count)
                if progress:
                    progress(message, sum(done) / len(targets))

        def scan_request(share: Sequence[Target]) -> dict[str, Any]:
            return {
                **base,
                "job": "scan",
                "targets": [{"name": t.name, "regex": t.regex} for t in share],
                "inputs": str(work / "inputs.npy"),
                "reference": str(work / "reference.npy"),
                "labels": str(work / "labels.npy") if labels is not None else None,
                "ranges": str(work / "ranges.pkl") if calibrated else None,
            }

        def scan(worker: int) -> list[dict[str, Any]]:
            request = scan_request(targets[worker::workers])
            answer = _child(f"scan-{worker}", request, lambda m, f: report(worker, m, f))
            return answer["records"]

        if on_ray:
            measured, nodes = _scan_on_ray(engine, targets, scan_request, progress)
            workers = engine.workers
        else:
            with ThreadPoolExecutor(workers) as pool:
                measured = [r for part in pool.map(scan, range(workers)) for r in part]
    by_name = {t.name: t for t in targets}
    n = len(inputs)
    # Ties keep the model's order, whichever worker measured them first.
    order = sorted(
        measured,
        key=lambda r: (r["output_snr_db"], r["agreement"], by_name[r["name"]].index),
    )
    records = tuple(
        ScanRecord(
            index=by_name[r["name"]].index,
            tensor=by_name[r["name"]].tensor,
            op=by_name[r["name"]].op,
            rank=rank,
            output_snr_db=r["output_snr_db"],
            agreement=r["agreement"],
            accuracy_drop=None
            if float_correct is None
            else (float_correct - r["correct"]) / n * 100.0,
        )
        for rank, r in enumerate(order, start=1)
    )
    return SensitivityScan(
        records=records,
        images=n,
        recipe=recipe.name,
        workers=workers,
        seconds=time.perf_counter() - start,
        float_accuracy=None if float_correct is None else float_correct / n,
        engine=engine.description if on_ray else f"{workers} local worker process(es)",
        nodes=nodes,
    )


def _scan_on_ray(
    engine: Any,
    targets: Sequence[Target],
    request: Any,
    progress: Progress | None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Each target a Ray task (the child's job, run on a node): independent builds fan out."""
    measured: list[dict[str, Any]] = []
    nodes: dict[str, int] = {}
    requests = [request([target]) for target in targets]
    for done, (_, answer) in enumerate(
        engine.call("inference.engine.workers.sensitivity", requests), start=1
    ):
        measured.extend(answer["records"])
        nodes[answer["node"]] = nodes.get(answer["node"], 0) + len(answer["records"])
        if progress:
            progress(f"{engine.description}: {done}/{len(targets)} targets", done / len(targets))
    return measured, nodes


def _calibration_dirs(spec: ModelSpec) -> list[Path] | None:
    return [spec.calibration_dir] if spec.calibration_dir else None


def _child(name: str, request: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
    log = cache_dir() / f"sensitivity.{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        return run_child(
            "inference.engine.workers.sensitivity",
            request,
            timeout=SCAN_TIMEOUT_S,
            log_path=log,
            progress=progress,
        )
    except ChildFailed as failure:
        raise ConversionError(
            f"sensitivity scan ({name}): {failure.reason} {failure.detail}; see {log}"
        ) from None


def ranking_agreement(report: LayerReport, scan: SensitivityScan) -> dict[str, Any]:
    """How far the one-pass ranking (own error) agrees with the scan, on the ops both ranked.

    Spearman's rank correlation (scipy), whether both put the same op first,
    and how many of the scan's 5 most sensitive are among the report's 5 most
    damaging.
    """
    damage = {r.tensor: r.damage_rank for r in report.records if r.damage_rank is not None}
    scanned = {r.tensor: r.rank for r in scan.records if r.tensor in damage}
    if len(scanned) < 2:
        return {"ops": len(scanned), "spearman": None, "same_first": None, "top5_overlap": None}
    # scipy.stats takes 0.4 s to import; only this comparison needs it.
    from scipy import stats  # noqa: PLC0415

    tensors = list(scanned)
    rho = stats.spearmanr([damage[t] for t in tensors], [scanned[t] for t in tensors]).statistic
    first_scan = min(tensors, key=lambda t: scanned[t])
    first_report = min(tensors, key=lambda t: damage[t])
    top_scan = set(sorted(tensors, key=lambda t: scanned[t])[:5])
    top_report = set(sorted(tensors, key=lambda t: damage[t])[:5])
    return {
        "ops": len(tensors),
        "spearman": round(float(rho), 4),
        "same_first": first_scan == first_report,
        "top5_overlap": len(top_scan & top_report),
    }
