"""``layers``: which op makes the damage in a quantized file, and where error is only carried.

It runs the images through a float reference and a quantized candidate (a
model's variant, or two ``.tflite`` files), compares every tensor they share
(SNR in dB), and measures each op's own error (the op fed the reference's
inputs) and, for the worst, what that error alone does to the output. It
prints the most damaging op, where damage starts and the ten most damaging
ops, or with ``--json`` every op's row (``own_snr_db``, ``damage_rank``, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from inference.analysis.layer_report import (
    FloatSelection,
    TensorError,
    compare_layers,
    short_name,
)
from inference.analysis.rebuild import OUTPUT_TOLERANCE, check_rebuild, rebuild_scheme
from inference.cli.common import (
    Subcommands,
    add_command,
    float_selection,
    json_argument,
    keep_float_arguments,
    model_arguments,
    preprocessed,
    print_json,
    progress,
    ranking_report,
    render,
    resolve_model,
)
from inference.core.errors import InputError, UsageError
from inference.core.specs import ModelSpec, Variant
from inference.engine.convert import ensure_recipe, ensure_variants
from inference.formats.recipes import variant_recipe
from inference.registry.catalog import resolve
from inference.registry.user_models import custom_spec


def register(subcommands: Subcommands) -> None:
    parser = add_command(
        subcommands, "layers", help="per-tensor error of a quantized file against its float one"
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    model_arguments(parser)
    parser.add_argument("--variant", default="int8", help="the candidate variant (default int8)")
    parser.add_argument("--reference", type=Path, default=None, help="reference .tflite file")
    parser.add_argument("--candidate", type=Path, default=None, help="candidate .tflite file")
    parser.add_argument(
        "--threshold", type=float, default=20.0, help="SNR in dB that marks damage (default 20)"
    )
    keep_float_arguments(parser)
    json_argument(parser)


def run(args: argparse.Namespace) -> int:
    reference, candidate, batches = _inputs(args)
    report = compare_layers(reference, candidate, batches)
    if args.json:
        print_json(report.as_rows())
        return 0
    culprit = report.most_damaging(1)[0]
    start = report.damage_starts(args.threshold)
    print(f"{candidate.name} against {reference.name}, {report.images} image(s), "
          f"{len(report.records)} tensors")  # fmt: skip
    print(f"most damaging op: #{culprit.index} {culprit.op} {short_name(culprit.tensor)} "
          f"({_damage(culprit)})")  # fmt: skip
    if start is None:
        print(f"damage starts nowhere: no op's own error is below {args.threshold:g} dB")
    else:
        print(f"damage starts at #{start.index} {start.op} {short_name(start.tensor)} "
              f"({_damage(start)})")  # fmt: skip
    columns = ["damage_rank", "index", "op", "own_output_snr_db", "own_snr_db", "snr_db",
               "clipped", "tensor"]  # fmt: skip
    worst = [
        {key: {**r.as_dict(), "tensor": short_name(r.tensor)}[key] for key in columns}
        for r in report.most_damaging(10)
    ]
    print("\n" + render(worst, "markdown"))
    return 0


def _damage(record: TensorError) -> str:
    parts = []
    if record.own_output_snr_db is not None:
        parts.append(f"its own error alone: output at {record.own_output_snr_db:.1f} dB")
    if record.own_snr_db is not None:
        parts.append(f"alone {record.own_snr_db:.1f} dB")
    return "; ".join([*parts, f"in the model {record.snr_db:.1f} dB"])


def _rebuilt(
    spec: ModelSpec, candidate: Path, selection: FloatSelection, images: list[str]
) -> Path:
    """``candidate`` (made elsewhere) rebuilt from the reference, the selection in float.

    Its quantization is read back as a recipe and checked first (stderr): the same
    tensors and outputs as the file, or which tensors differ.
    """
    scheme, plain = rebuild_scheme(spec, candidate)
    inputs = preprocessed(spec, images)
    check = check_rebuild(candidate, plain, inputs[:4], scheme)
    if not check.same:
        differ = ", ".join(short_name(t) for t in (*check.missing, *check.differing)[:5])
        raise InputError(
            f"{candidate.name}: its quantization cannot be rebuilt exactly as a recipe "
            f"(outputs differ by up to {check.max_output_difference:.3g}; at {differ})"
        )
    print(f"rebuild: {candidate.name} read back as a recipe gives the same {check.tensors} "
          f"tensors and outputs within {OUTPUT_TOLERANCE:g}", file=sys.stderr)  # fmt: skip
    report = compare_layers(spec.path, plain, inputs) if selection.worst else None
    return ensure_recipe(spec, selection.apply(scheme.recipe, report), progress=progress)


def _inputs(args: argparse.Namespace) -> tuple[Path, Path, list[np.ndarray]]:
    """The reference and candidate files, and the images preprocessed for them."""
    if (args.reference is None) != (args.candidate is None):
        raise UsageError("give both --reference and --candidate, or --model and --variant")
    selection = float_selection(args)
    if args.reference is not None:
        spec = custom_spec(args.reference, normalize=args.normalize)
        reference, candidate = args.reference, args.candidate
        if selection:
            candidate = _rebuilt(spec, candidate, selection, args.images)
    else:
        spec = resolve_model(args)
        _, (variant,) = resolve(spec, args.variant, single=True, among=lambda v: v.is_tflite)
        paths = ensure_variants(spec, [Variant.FP32, variant], progress=progress)
        reference, candidate = paths[Variant.FP32], paths[variant]
        if selection:
            if not variant.is_quantized:
                raise UsageError(f"--keep-float needs a quantized --variant; received {variant}")
            base = variant_recipe(variant)
            images = [Path(p) for p in args.images]
            report = ranking_report(spec, base, None, images) if selection.worst else None
            candidate = ensure_recipe(spec, selection.apply(base, report), progress=progress)
    return reference, candidate, preprocessed(spec, args.images)
