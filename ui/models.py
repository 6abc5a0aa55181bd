"""The Models page's data: the zoo table, cached files to download, recipe variants, uploads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import streamlit as st

from inference import ModelSpec, Variant, is_available
from inference.core.specs import AnyVariant, NormalizeMode, OutputKind, RecipeVariant
from inference.engine.convert import (
    QUOTA_ENV,
    conversion_record,
    ensure_variants,
    is_converted,
    variant_path,
)
from inference.formats.recipes import Recipe, parse_recipe, variant_recipe
from inference.formats.tflite_file import op_types
from inference.registry.user_models import store_upload
from ui.resources import Upload, session_dir, session_variant

COMMON_OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN", "SOFTMAX"]
"""Offered before the float file exists to read the model's own op types from."""
AUTO = "auto"
"""The upload form's choice for "read it from the model"."""


def own_file(spec: ModelSpec) -> AnyVariant | None:
    """The variant that is the person's own ``.tflite`` file, if the model is one."""
    return spec.variants[0] if spec.is_tflite_file else None


def file_sizes(spec: ModelSpec) -> dict[AnyVariant, int]:
    """Bytes of each built-in variant's cached file (the person's own file is not counted)."""
    mine = own_file(spec)
    return {
        variant: variant_path(spec, variant).stat().st_size
        for variant in Variant
        if variant.is_tflite
        and variant in spec.variants
        and variant is not mine
        and is_converted(spec, variant)
    }


def zoo_row(spec: ModelSpec, sizes: Mapping[AnyVariant, int], offline: bool) -> dict[str, object]:
    """One model in the zoo table: what it is, and a cell per built-in variant.

    A variant cell reads "—" (not offered), "Keras", "your file", the cached file's
    size in MB (``sizes``), or "not converted".
    """
    row: dict[str, object] = {
        "model": spec.name,
        "title": spec.title,
        "source": spec.source.value,
        "input": "×".join(map(str, spec.input_size)),
        "classes": spec.num_classes,
        "offline": offline,
    }
    for variant in Variant:
        if variant not in spec.variants:
            row[variant.value] = "—"
        elif variant is Variant.ORIGINAL:
            row[variant.value] = "Keras"
        elif variant is own_file(spec):
            row[variant.value] = "your file"
        elif variant in sizes:
            row[variant.value] = f"{sizes[variant] / 1e6:.1f} MB"
        else:
            row[variant.value] = "not converted"
    row["recipe variants"] = ", ".join(v.value for v in spec.recipe_variants) or "—"
    return row


def zoo_table(specs: Iterable[ModelSpec]) -> pd.DataFrame:
    """Every model with its source, input, classes, and each variant's conversion status."""
    return pd.DataFrame([zoo_row(spec, file_sizes(spec), is_available(spec)) for spec in specs])


def cache_note(used: int, evictable: int, quota: int | None) -> str:
    """What the table's caption says about the conversion cache and its quota."""
    return (
        "Offline: usable without a network now. Download models fetch ImageNet weights from "
        f"the internet on first use. Converted files are cached on disk for every session: "
        f"{used / 1e6:,.0f} MB now"
        + (
            f" of a {quota / 1e6:,.0f} MB quota; {evictable} file(s) of uploaded models and "
            "custom recipes may be evicted, least recently used first (the zoo's built-in "
            "variants never)."
            if quota
            else f" (no quota: set {QUOTA_ENV} to bound it)."
        )
    )


def convertible_variants(spec: ModelSpec) -> list[AnyVariant]:
    """The TFLite variants this app makes of ``spec`` (not the person's own file)."""
    mine = own_file(spec)
    return [v for v in spec.variants if v.is_tflite and v is not mine]


def recipe_json(rules: object) -> str:
    """Recipe rules as the JSON file people download (and ``quantize --recipe`` reads)."""
    return json.dumps(rules, indent=2) + "\n"


def file_summary(variant: str, size_bytes: int, seconds: object) -> str:
    """A cached file in one line of Markdown: variant, size, and how long making it took."""
    made = f" · made in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    return f"**{variant}** · {size_bytes / 1e6:.2f} MB{made}"


@dataclass(frozen=True)
class VariantFile:
    """A variant's cached file, ready to offer for download."""

    variant: AnyVariant
    path: Path
    summary: str
    """See :func:`file_summary`."""
    recipe: str | None
    """The recipe that made it, as JSON; None when its sidecar records none."""


def variant_files(spec: ModelSpec, variants: Sequence[AnyVariant]) -> list[VariantFile]:
    """The files of those ``variants`` that are cached now, in their order."""
    files = []
    for variant in variants:
        if not is_converted(spec, variant):
            continue
        path = variant_path(spec, variant)
        record = conversion_record(path)
        files.append(
            VariantFile(
                variant,
                path,
                file_summary(variant.value, path.stat().st_size, record.get("seconds")),
                recipe_json(record["recipe"]) if "recipe" in record else None,
            )
        )
    return files


def saved_recipe(path: Path) -> str:
    """The recipe a cached file was made with, as JSON (``[]`` when its sidecar has none)."""
    return recipe_json(conversion_record(path).get("recipe", []))


def recipe_bases(spec: ModelSpec) -> tuple[list[str], int]:
    """The quantized variants a recipe can start from, and which one to offer first (int8)."""
    bases = [v.value for v in spec.variants if v.is_quantized]
    return bases, bases.index(Variant.INT8.value) if Variant.INT8.value in bases else 0


def keepable_ops(spec: ModelSpec) -> list[str]:
    """Op types to offer for keeping in float: the fp32 file's own once it exists."""
    if is_converted(spec, Variant.FP32):
        return op_types(variant_path(spec, Variant.FP32))
    return COMMON_OPS


def tensor_patterns(text: str) -> tuple[str, ...]:
    """One regex per non-blank line, stripped."""
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def make_recipe(
    spec: ModelSpec,
    base: str,
    upload: Upload | None,
    keep_ops: Sequence[str],
    keep_tensors: str,
) -> Recipe:
    """The uploaded recipe, else ``base``'s, keeping ``keep_ops`` and matching tensors in float.

    Raises:
        InputError: The uploaded recipe is not a valid recipe.
    """
    recipe = (
        parse_recipe(upload.getvalue(), name=Path(upload.name).stem)
        if upload is not None
        else variant_recipe(spec.variant(base))
    )
    return recipe.keeping_float(tensor_patterns(keep_tensors), tuple(keep_ops))


def build_session_variant(spec: ModelSpec, recipe: Recipe) -> tuple[RecipeVariant, Path]:
    """Quantize ``spec`` with ``recipe``, showing progress; the variant and its file.

    The variant is not listed yet: call :func:`ui.resources.keep_session_variant`
    once this returns, so a failed build never lists it.
    """
    offering, variant = session_variant(spec, recipe)
    with st.status(f"Quantizing {spec.title} as {variant.value}…") as box:
        bar = st.progress(0.0)
        path = ensure_variants(
            offering, [variant], progress=lambda text, done: bar.progress(done, text=text)
        )[variant]
        box.update(label=f"Built {path.name}", state="complete")
    return variant, path


def made_note(title: str, name: str, path: Path) -> str:
    """What the page says once a recipe variant is built."""
    return (
        f"{title} · {name}: {path.stat().st_size / 1e6:.2f} MB. It is listed with the "
        f"model's variants on Classify, Compare, Layers and Benchmark for this session."
    )


def check_upload(
    model_file: Upload,
    labels_file: Upload | None,
    normalize: NormalizeMode | Literal["auto"],
    outputs: OutputKind | Literal["auto"],
) -> ModelSpec:
    """Store an uploaded model in this session's folder and check it ("auto": from the model).

    Raises:
        InputError: The file type is wrong, or the model or its labels are refused.
    """
    return store_upload(
        session_dir(),
        model_file.name,
        model_file.getvalue(),
        labels_file.getvalue() if labels_file is not None else None,
        normalize=None if normalize == AUTO else normalize,
        outputs=None if outputs == AUTO else outputs,
    )


def added_note(spec: ModelSpec) -> str:
    """What the page says once an uploaded model is added."""
    return (
        f"Added {spec.title}: input {spec.input_size[0]}×{spec.input_size[1]}, "
        f"{spec.num_classes} classes ({spec.outputs}), input scaling "
        f"{spec.preprocessing.normalize}, variants "
        f"{', '.join(v.value for v in spec.variants)}. Pick it on the Classify or Compare page."
    )
