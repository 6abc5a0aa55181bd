"""Scale-out targets, measured the same way each time: memory, two workers, the runtime's speed.

    python scripts/scale_out.py [--images 6000] [--ray] [--json]

1. Builds (once, then reuses) a folder of ``--images`` labelled 320x240 JPEG
   photos (random crops of the bundled photos, in class folders named after
   ImageNet labels; the accuracy means nothing) and runs
   ``python -m inference evaluate --model efficientnet_lite0 --variants int8``
   on it in process (``--workers 0``: LiteRT on both cores) and with one and two
   worker processes (one LiteRT thread each), sampling the resident memory of
   the whole process tree every 50 ms. Targets: peak <= 1.5 GB; two workers
   >= 1.4x the images per second of one.
2. With ``--ray``, the same on a two-node Ray cluster started here (Ray's
   ``Cluster``, one CPU per node, loopback), shut down at the end.
3. ``python -m inference bench --variants int8``: its median over
   ``litert-benchmark``'s on the same file, in the same run (target <= 1.10).
4. The per-image cost of each stage (decode, preprocess, and inference per
   variant, all seven) measured in one process on ``--cost-images`` photos, and
   a projection for 1 million images x 7 variants on a cluster of N nodes.

Run it on a quiet machine: speed targets are ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
from memory_autoquant import ASSETS, CLASSES, REPO_ROOT, measure
from PIL import Image, ImageEnhance

SIZE = (320, 240)
MEMORY_TARGET_GB = 1.5
SPEEDUP_TARGET = 1.4
BENCH_TARGET = 1.10
ALL_VARIANTS = "original,fp32,fp16,dynamic,int8,int16x8,w4"


def build_folder(root: Path, images: int, seed: int = 0) -> None:
    """``images`` 320x240 JPEGs in ``class/NNNNN.jpg`` folders (written, then renamed)."""
    photos = [(Image.open(ASSETS / name).convert("RGB"), label) for name, label in CLASSES.items()]
    rng, noise = random.Random(seed), np.random.default_rng(seed)
    partial = root.with_name(root.name + ".partial")
    for index in range(images):
        photo, label = photos[index % len(photos)]
        width, height = photo.size
        scale = rng.uniform(0.55, 1.0)
        w, h = int(min(width, height * 4 / 3) * scale), int(min(height, width * 3 / 4) * scale)
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        image = photo.crop((left, top, left + w, top + h)).resize(SIZE, Image.BILINEAR)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
        pixels = np.asarray(image, np.int16) + noise.integers(-4, 5, (*SIZE[::-1], 3), np.int16)
        folder = partial / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            folder / f"{index:05d}.jpg", "JPEG", quality=85
        )
    partial.replace(root)


def evaluate(data: Path, variants: str, extra: list[str], env: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "inference", "evaluate", "--model", "efficientnet_lite0",
               "--variants", variants, "--data", str(data), "--json", *extra]  # fmt: skip
    result = measure(command, env, REPO_ROOT)
    if result["returncode"] != 0:
        raise SystemExit(f"evaluate failed: {result['stderr'].strip()[-800:]}")
    report = json.loads(result["stdout"])
    run = report["run"]
    return {
        "engine": run["engine"],
        "images": run["images"],
        "seconds": run["seconds"],
        "images_per_second": run["images_per_second"],
        "stage_shares": run["stage_shares"],
        "stage_seconds": run["stage_seconds"],
        "nodes": run["nodes"],
        "accuracy": {row["variant"]: row["accuracy"] for row in report["summary"]},
        "peak_gb": round(result["peak_bytes"] / 1e9, 3),
        "wall_seconds": round(result["seconds"], 1),
    }


def on_ray(data: Path, env: dict[str, str]) -> dict:
    env = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported
    from ray.cluster_utils import Cluster  # noqa: PLC0415

    # Ray's Cluster gives each node a 150 MB object store by default; a node of a real
    # cluster has about 30 % of its memory. 600 MB here keeps decoded batches in memory.
    store = 600 * 1024 * 1024
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": store})  # fmt: skip
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=store)
        cluster.wait_for_nodes()
        return evaluate(data, "int8", ["--ray", cluster.address], env)
    finally:
        cluster.shutdown()


def bench(env: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "inference", "bench", "--models", "efficientnet_lite0",
               "--variants", "int8", "--runs", "200", "--json"]  # fmt: skip
    result = measure(command, env, REPO_ROOT)
    if result["returncode"] != 0:
        return {"error": result["stderr"].strip()[-400:]}
    report = json.loads(result["stdout"])
    targets = {t["target"]: t for t in report.get("targets", [])}
    found = next((t for name, t in targets.items() if "litert-benchmark" in name), None)
    int8 = next((r for r in report["results"] if r["variant"] == "int8"), None)
    return {"litert_benchmark": report.get("litert_benchmark"), "target": found, "int8": int8}


def projection(cost: dict, efficiency: float, nodes: tuple[int, ...], cores: int) -> list[dict]:
    """1 million images x 7 variants on N nodes of ``cores`` cores, from one process's costs.

    Measured: each stage's seconds per image in one process (``cost``) and how
    well two local workers scale (``efficiency`` = speedup / 2). Assumed: the
    nodes are this machine's equals, the data reaches them as fast as from a
    local disk, and the cluster scales as two local workers did. The Keras
    original runs only where TensorFlow is, the driver, whatever N is.
    """
    seconds, images = cost["stage_seconds"], cost["images"]
    original = seconds.get("inference original", 0.0) / images
    slow = seconds.get("inference int16x8", 0.0) / images
    tflite = sum(v for k, v in seconds.items() if k != "inference original") / images
    rows = []
    for count in nodes:
        workers = count * cores * efficiency
        rows.append({
            "nodes": count,
            "cores_per_node": cores,
            "tflite_hours": round(1_000_000 * tflite / workers / 3600, 2),
            "tflite_hours_without_int16x8": round(1_000_000 * (tflite - slow) / workers / 3600, 2),
            "original_hours_on_the_driver": round(1_000_000 * original / 3600, 2),
        })  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--cost-images", type=int, default=96)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--ray", action="store_true", help="also on a two-node Ray cluster")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = args.folder or Path(tempfile.gettempdir()) / f"quantlens-photos-320x240-{args.images}"
    if not root.is_dir():
        print(f"building {root}…", file=sys.stderr, flush=True)
        build_folder(root, args.images)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # Conversions first (cached), so that no figure below includes one.
    warm = Path(tempfile.mkdtemp()) / "warm"
    build_folder(warm, 16)
    evaluate(warm, ALL_VARIANTS, ["--workers", "0"], env)

    here = evaluate(root, "int8", ["--workers", "0"], env)
    one = evaluate(root, "int8", ["--workers", "1"], env)
    two = evaluate(root, "int8", ["--workers", "2"], env)
    speedup = two["images_per_second"] / one["images_per_second"]
    ray = on_ray(root, env) if args.ray else None
    timed = bench(env)
    cost_root = Path(tempfile.mkdtemp()) / "cost"
    build_folder(cost_root, args.cost_images, seed=1)
    cost = evaluate(cost_root, ALL_VARIANTS, ["--workers", "0"], env)
    per_image_ms = {k: round(v * 1e3 / cost["images"], 3) for k, v in cost["stage_seconds"].items()}
    summary = {
        "machine": machine(),
        "images": args.images,
        "in_process": here,
        "one_worker": one,
        "two_workers": two,
        "speedup": round(speedup, 3),
        "ray": ray,
        "bench": timed,
        "per_image_ms_one_process": per_image_ms,
        "projection_1m_x7": projection(cost, speedup / 2, (1, 4, 16, 64), 2),
        "targets": {
            "peak_gb <= 1.5": max(r["peak_gb"] for r in (here, one, two)) <= MEMORY_TARGET_GB,
            "two workers >= 1.4x one": speedup >= SPEEDUP_TARGET,
            "bench int8 / litert-benchmark <= 1.10": bool(timed.get("target", {}) or {})
            and timed["target"]["met"] == "yes",
        },
    }
    print(json.dumps(summary, indent=2) if args.json else _text(summary))
    return 0 if all(summary["targets"].values()) else 1


def machine() -> str:
    cpu = Path("/proc/cpuinfo").read_text()
    return cpu.split("model name")[1].split("\n")[0].strip(": \t")


def _text(summary: dict) -> str:
    lines = [f"{summary['machine']}, {summary['images']} photos 320x240, Lite0 int8"]
    for key in ("in_process", "one_worker", "two_workers", "ray"):
        run = summary[key]
        if run:
            lines.append(f"{run['engine']}: {run['images_per_second']} images/s, peak "
                         f"{run['peak_gb']} GB, stages {run['stage_shares']}")  # fmt: skip
    lines.append(f"two workers / one: {summary['speedup']}x")
    lines.append(f"bench: {summary['bench'].get('target')}")
    lines.append(f"per image (ms, one process): {summary['per_image_ms_one_process']}")
    lines.append(f"1M images x 7 variants: {summary['projection_1m_x7']}")
    lines.append(f"targets: {summary['targets']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
