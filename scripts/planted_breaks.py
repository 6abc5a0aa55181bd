"""Plant breaks in EfficientNet-Lite0 and check that both rankings find each; time them.

Each break is made with ai-edge-quantizer's own recipe rules: a base variant's
recipe plus one rule that gives one op weights the rest of the model does not
have (fewer bits, or one scale for all channels). For each, the one-pass layer
report (each op's own error) and the sensitivity scan rank every op; the
planted op should be first in both. Then the two timing targets:

- a one-pass report with own errors on one image (target <= 3 s);
- a full per-op scan of plain int8 on 14 images (target <= 60 s on two cores).

    python scripts/planted_breaks.py [--json] [--images 4]

Run it alone on the machine: it times things.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference import Variant, get_spec
from inference.analysis.layer_report import compare_layers
from inference.analysis.sensitivity import ranking_agreement, sensitivity_scan
from inference.core.paths import ASSETS_DIR
from inference.engine.convert import ensure_recipe, ensure_variants
from inference.formats.images import decode_image, preprocess
from inference.formats.recipes import builtin_recipe, parse_recipe

PREFIX = "efficientnet_lite0_1/"
BREAKS = [
    # (name, base variant, tensor prefix, weight bits, granularity)
    ("block 11 expand conv, 4-bit per-tensor in int8", Variant.INT8, "blocks.11.bn0.relu6_1/", 4,
     "TENSORWISE"),
    ("logits (fully connected), 2-bit in dynamic", Variant.DYNAMIC, "fc_1/", 2, "TENSORWISE"),
    ("block 1 depthwise, one scale for all channels in int8", Variant.INT8,
     "blocks.1.bn1.relu6_1/", 8, "TENSORWISE"),
    ("block 13 projection conv, 2-bit in dynamic", Variant.DYNAMIC, "blocks.13.bn2_1/", 2,
     "TENSORWISE"),
    ("block 4 expand conv, 4-bit per-tensor in int8", Variant.INT8, "blocks.4.bn0.relu6_1/", 4,
     "TENSORWISE"),
]  # fmt: skip


def photos(count: int) -> list[np.ndarray]:
    spec = get_spec("efficientnet_lite0")
    files = sorted((ASSETS_DIR / "samples").glob("*.jpg"))
    files += sorted((ASSETS_DIR / "calibration").glob("*.jpg"))
    return [preprocess(decode_image(p), spec.preprocessing) for p in files[:count]]


def plant(base: Variant, tensor: str, bits: int, granularity: str, name: str):
    rules = builtin_recipe(base).rules
    rule = json.loads(json.dumps(rules[0]))
    rule["regex"] = "^" + re.escape(PREFIX + tensor)
    rule["op_config"]["weight_tensor_config"].update(num_bits=bits, granularity=granularity)
    return parse_recipe(json.dumps([*rules, rule]), name=name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4, help="images per planted break")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    spec = get_spec("efficientnet_lite0")
    float_file = ensure_variants(spec, [Variant.FP32])[Variant.FP32]
    inputs = photos(max(args.images, 14))
    rows = []
    for name, base, tensor, bits, granularity in BREAKS:
        recipe = plant(base, tensor, bits, granularity, "planted-" + re.sub(r"\W+", "-", tensor))
        broken = ensure_recipe(spec, recipe)
        report = compare_layers(float_file, broken, inputs[: args.images])
        scan = sensitivity_scan(spec, float_file, recipe, inputs[: args.images])
        planted = next(r for r in report.records if r.tensor.startswith(PREFIX + tensor))
        rows.append(
            {
                "break": name,
                "op": f"#{planted.index} {planted.op}",
                "damage_rank": planted.damage_rank,
                "scan_rank": scan.rank_of(planted.tensor),
                "lowest_snr_at": f"#{report.worst(1)[0].index}",
                "own_output_snr_db": round(planted.own_output_snr_db or float("nan"), 1),
                "scan_output_snr_db": round(scan.records[0].output_snr_db, 1),
                **{k: v for k, v in ranking_agreement(report, scan).items() if k != "ops"},
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    int8 = ensure_variants(spec, [Variant.INT8])[Variant.INT8]
    compare_layers(float_file, int8, inputs[:1])  # warm: imports, first interpreter
    start = time.perf_counter()
    compare_layers(float_file, int8, inputs[:1])
    report_s = time.perf_counter() - start
    scan = sensitivity_scan(spec, float_file, builtin_recipe(Variant.INT8), inputs[:14])
    timing = {
        "report_one_image_s": round(report_s, 2),
        "scan_int8_14_images_s": round(scan.seconds, 1),
        "scan_ops": len(scan.records),
        "workers": scan.workers,
    }
    if args.json:
        print(json.dumps({"breaks": rows, "timing": timing}, indent=2))
    else:
        for row in rows:
            print(row)
        print(timing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
