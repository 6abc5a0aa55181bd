"""Peak memory of ``autoquant`` on a large labelled zip, measured the same way each time.

    python scripts/memory_autoquant.py [--images 20000] [--max-drop 100] [--json]

Builds (once, then reuses) a zip of ``--images`` 224x224 JPEG photos made from
the bundled photos in ``assets/samples`` and ``assets/calibration`` (random
crops, flips, brightness and a little noise), in class folders named after
ImageNet labels, so ``efficientnet_lite0`` takes it as a labelled set (its
accuracy means nothing here). Then runs

    python -m inference autoquant --model MODEL --data ZIP --max-drop X --json

in a child process and samples, every 50 ms, the resident memory of that
process and its children (the converter and quantizer children), summed:
``peak_gb`` is the largest sum seen (target: at most 1.5 GB). ``main_peak_gb``
is the autoquant process alone (its ``VmHWM``, the kernel's high-water mark).

A warm-up run on 32 of the images comes first (``--no-warmup`` skips it), so
the conversions the run needs are cached and the figure is the search's own;
without it, a cold cache adds the converter child (TensorFlow) to the peak.
``--source DIR`` runs the ``inference`` package of another checkout (e.g. an
older commit exported with ``git archive``) to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS = REPO_ROOT / "assets"
SIDE = 224
TARGET_GB = 1.5
SAMPLE_INTERVAL_S = 0.05
CLASSES = {
    "samples/chelsea.jpg": "Egyptian_cat",
    "samples/coffee.jpg": "espresso",
    "samples/rocket.jpg": "missile",
    "calibration/rocket.jpg": "missile",
    "samples/astronaut.jpg": "space_shuttle",
    "calibration/astronaut.jpg": "space_shuttle",
    "calibration/brick.jpg": "stone_wall",
    "calibration/gravel.jpg": "stone_wall",
    "calibration/camera.jpg": "reflex_camera",
    "calibration/coins.jpg": "brass",
    "calibration/grass.jpg": "hay",
    "calibration/hubble_deep_field.jpg": "planetarium",
    "calibration/immunohistochemistry.jpg": "velvet",
    "calibration/retina.jpg": "jellyfish",
}
"""Bundled photo -> the ImageNet label its class folder is named after."""


def _variation(photo: Image.Image, rng: random.Random, noise: np.random.Generator) -> bytes:
    """One 224x224 JPEG: a random crop of ``photo``, maybe flipped, brightened, noisy."""
    width, height = photo.size
    side = int(min(width, height) * rng.uniform(0.55, 1.0))
    left, top = rng.randint(0, width - side), rng.randint(0, height - side)
    image = photo.crop((left, top, left + side, top + side)).resize((SIDE, SIDE), Image.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    pixels = np.asarray(image, np.int16) + noise.integers(-4, 5, (SIDE, SIDE, 3), np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def build_zip(path: Path, images: int, seed: int = 0) -> None:
    """``images`` photos in ``class/NNNNN.jpg`` folders, written to ``path`` (then renamed)."""
    photos = [(Image.open(ASSETS / name).convert("RGB"), label) for name, label in CLASSES.items()]
    rng, noise = random.Random(seed), np.random.default_rng(seed)
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not shrink
        for index in range(images):
            photo, label = photos[index % len(photos)]
            archive.writestr(f"photos/{label}/{index:05d}.jpg", _variation(photo, rng, noise))
    partial.replace(path)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the task ended meanwhile
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _high_water_bytes(pid: int) -> int:
    """A process's peak resident memory so far (``VmHWM``), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def measure(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, object]:
    """Run ``command``; its exit status, output, time and the peak memory of its process tree."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        began = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        peak = main_peak = 0
        while True:
            peak = max(peak, sum(_rss_bytes(p) for p in _tree(process.pid)))
            main_peak = max(main_peak, _high_water_bytes(process.pid))
            finished, status, _ = os.wait4(process.pid, os.WNOHANG)
            if finished:
                break
            time.sleep(SAMPLE_INTERVAL_S)
        seconds = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "returncode": process.returncode,
            "stdout": out.read(),
            "stderr": err.read(),
            "seconds": seconds,
            "peak_bytes": peak,
            "main_peak_bytes": main_peak,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="photos in the zip")
    parser.add_argument("--zip", type=Path, default=None, help="where the zip is kept")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--max-drop", default="100", help="autoquant's budget (100: one step)")
    parser.add_argument("--no-warmup", action="store_true", help="measure with a cold cache")
    parser.add_argument("--source", type=Path, default=REPO_ROOT, help="checkout to run")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()

    archive = args.zip or Path(tempfile.gettempdir()) / f"quantlens-photos-{args.images}.zip"
    if not archive.is_file():
        print(f"building {archive} ({args.images} photos)…", file=sys.stderr, flush=True)
        start = time.perf_counter()
        build_zip(archive, args.images)
        print(f"built in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    source = args.source.resolve()
    env = {**os.environ, "PYTHONPATH": str(source)}

    def command(data: Path) -> list[str]:
        return [sys.executable, "-m", "inference", "autoquant", "--model", args.model,
                "--variant", args.variant, "--data", str(data), "--max-drop", args.max_drop,
                "--json"]  # fmt: skip

    if not args.no_warmup:
        with tempfile.TemporaryDirectory() as folder:
            small = Path(folder) / "small.zip"
            with zipfile.ZipFile(archive) as big, zipfile.ZipFile(small, "w") as few:
                for member in big.infolist()[:32]:
                    few.writestr(member, big.read(member))
            warm = measure(command(small), env, source)
        if warm["returncode"] != 0:
            print(f"error: the warm-up run failed: {warm['stderr'].strip()[-500:]}",
                  file=sys.stderr)  # fmt: skip
            return 1
    result = measure(command(archive.resolve()), env, source)
    if result["returncode"] != 0:
        print(f"error: autoquant failed ({result['returncode']}): "
              f"{result['stderr'].strip()[-500:]}", file=sys.stderr)  # fmt: skip
    report = json.loads(result["stdout"]) if result["returncode"] == 0 else {}
    summary = {
        "images": args.images,
        "zip_mb": round(archive.stat().st_size / 1e6, 1),
        "model": args.model,
        "variant": args.variant,
        "max_drop": float(args.max_drop),
        "warm_cache": not args.no_warmup,
        "returncode": result["returncode"],
        "seconds": round(result["seconds"], 1),
        "peak_gb": round(result["peak_bytes"] / 1e9, 3),
        "main_peak_gb": round(result["main_peak_bytes"] / 1e9, 3),
        "target_gb": TARGET_GB,
        "met": result["returncode"] == 0 and result["peak_bytes"] / 1e9 <= TARGET_GB,
        "scored_images": report.get("images"),
        "float_accuracy": report.get("float_accuracy"),
        "steps": [
            {key: step[key] for key in ("kept_float", "accuracy", "drop_points", "build_seconds")}
            for step in report.get("steps", [])
        ],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        steps, met = len(summary["steps"]), "met" if summary["met"] else "NOT met"
        print(f"autoquant on {summary['images']} photos ({summary['zip_mb']} MB zip), "
              f"{steps} step(s) in {summary['seconds']} s: peak {summary['peak_gb']} "
              f"GB with its children, sampled ({summary['main_peak_gb']} GB its own high-water "
              f"mark); target <= {TARGET_GB} GB: {met}")  # fmt: skip
    return 0 if summary["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
