"""Rebuild a quantized file made elsewhere from its float model, with chosen ops in float.

The file's scheme is read back as a recipe (:func:`inference.formats.file_scheme.file_scheme`),
and the rebuilt file is checked against the uploaded one before anything is
built from it: with nothing kept in float, the same tensors with the same
types and scales, and the same outputs within :data:`OUTPUT_TOLERANCE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from inference.core.specs import ModelSpec
from inference.engine.convert import ensure_recipe
from inference.formats.file_scheme import FileScheme, file_scheme
from inference.formats.tflite_file import model_outputs

__all__ = ["OUTPUT_TOLERANCE", "RebuildCheck", "check_rebuild", "rebuild_scheme"]

OUTPUT_TOLERANCE = 1e-5
"""Largest difference allowed between the uploaded file's outputs and the rebuilt one's."""
SCALE_RTOL = 1e-5


@dataclass(frozen=True)
class RebuildCheck:
    """The rebuilt file (nothing in float) against the uploaded one."""

    tensors: int
    missing: tuple[str, ...]
    """Tensors of one file the other lacks."""
    differing: tuple[str, ...]
    """Tensors of both whose type or scales differ."""
    max_output_difference: float
    images: int
    unexpressed: tuple[tuple[str, str], ...]

    @property
    def same(self) -> bool:
        return (
            not self.missing
            and not self.differing
            and self.max_output_difference <= OUTPUT_TOLERANCE
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "same": self.same,
            "tensors": self.tensors,
            "missing": list(self.missing),
            "differing": list(self.differing),
            "max_output_difference": float(f"{self.max_output_difference:.3g}"),
            "output_tolerance": OUTPUT_TOLERANCE,
            "images": self.images,
            "unexpressed": [{"tensor": t, "why": why} for t, why in self.unexpressed],
        }


def rebuild_scheme(spec: ModelSpec, candidate: Path) -> tuple[FileScheme, Path]:
    """``candidate``'s scheme as a recipe, and the file it makes from ``spec``'s float model."""
    scheme = file_scheme(candidate.read_bytes(), name=f"{candidate.stem}-scheme")
    return scheme, ensure_recipe(spec, scheme.recipe)


def _details(path: Path) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in Interpreter(model_path=str(path)).get_tensor_details()}


def check_rebuild(
    uploaded: Path, rebuilt: Path, inputs: Sequence[np.ndarray], scheme: FileScheme
) -> RebuildCheck:
    """Compare tensors (type, scales) and outputs of the two files on ``inputs``."""
    theirs, ours = _details(uploaded), _details(rebuilt)
    shared = sorted(set(theirs) & set(ours))
    differing = []
    for name in shared:
        a, b = theirs[name], ours[name]
        scales_a = np.asarray(a["quantization_parameters"]["scales"])
        scales_b = np.asarray(b["quantization_parameters"]["scales"])
        same_kind = a["dtype"] == b["dtype"] and scales_a.shape == scales_b.shape
        if not same_kind or not np.allclose(scales_a, scales_b, rtol=SCALE_RTOL):
            differing.append(name)
    batch = np.concatenate([np.asarray(x, np.float32) for x in inputs])
    difference = float(
        np.max(
            np.abs(
                model_outputs(uploaded.read_bytes(), batch)
                - model_outputs(rebuilt.read_bytes(), batch)
            )
        )
    )
    return RebuildCheck(
        tensors=len(theirs),
        missing=tuple(sorted(set(theirs) ^ set(ours))),
        differing=tuple(differing),
        max_output_difference=difference,
        images=len(batch),
        unexpressed=scheme.unexpressed,
    )
