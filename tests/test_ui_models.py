"""The Models page's shaping: the zoo table's cells, notes, recipe choices (no conversion)."""

from __future__ import annotations

from dataclasses import replace

from inference import ZOO, Variant
from inference.core.specs import TFLITE_FILE, RecipeVariant
from inference.engine.convert import QUOTA_ENV
from ui import models

LITE0 = ZOO["efficientnet_lite0"]
THEIR_FILE = replace(
    LITE0, name="theirs", title="Theirs", builder=TFLITE_FILE, variants=(Variant.INT8,)
)
"""A ``.tflite`` someone brought: it runs only as itself."""
MINE = RecipeVariant("mine", "[]")


def test_a_zoo_row_shows_each_variant_as_keras_size_or_not_converted() -> None:
    row = models.zoo_row(
        LITE0.with_variants((MINE,)),
        {Variant.FP32: 18_400_000, Variant.INT8: 5_260_000},
        offline=True,
    )

    assert row == {
        "model": "efficientnet_lite0",
        "title": LITE0.title,
        "source": "bundled",
        "input": "224×224",
        "classes": 1000,
        "offline": True,
        "original": "Keras",
        "fp32": "18.4 MB",
        "fp16": "not converted",
        "dynamic": "not converted",
        "int8": "5.3 MB",
        "int16x8": "not converted",
        "w4": "not converted",
        "recipe variants": "mine",
    }


def test_a_brought_tflite_is_your_file_and_offers_nothing_else() -> None:
    row = models.zoo_row(THEIR_FILE, {Variant.INT8: 1_000_000}, offline=False)

    assert [row[v.value] for v in Variant] == ["—", "—", "—", "—", "your file", "—", "—"]
    assert row["recipe variants"] == "—"
    assert row["offline"] is False


def test_convertible_variants_leave_out_keras_and_a_brought_file() -> None:
    assert models.convertible_variants(LITE0.with_variants((MINE,))) == [
        Variant.FP32,
        Variant.FP16,
        Variant.DYNAMIC,
        Variant.INT8,
        Variant.INT16X8,
        Variant.W4,
        MINE,
    ]
    assert models.convertible_variants(THEIR_FILE) == []


def test_the_cache_note_with_and_without_a_quota() -> None:
    start = (
        "Offline: usable without a network now. Download models fetch ImageNet weights from "
        "the internet on first use. Converted files are cached on disk for every session: "
    )

    assert models.cache_note(1_234_400_000, 3, 2_000_000_000) == start + (
        "1,234 MB now of a 2,000 MB quota; 3 file(s) of uploaded models and custom recipes "
        "may be evicted, least recently used first (the zoo's built-in variants never)."
    )
    assert models.cache_note(40_000_000, 0, None) == start + (
        f"40 MB now (no quota: set {QUOTA_ENV} to bound it)."
    )


def test_a_file_summary_says_how_long_making_it_took_when_recorded() -> None:
    assert models.file_summary("int8", 5_123_456, 3.14159) == "**int8** · 5.12 MB · made in 3.1 s"
    assert models.file_summary("fp32", 20_000_000, 12) == "**fp32** · 20.00 MB · made in 12.0 s"
    assert models.file_summary("fp16", 9_990_000, None) == "**fp16** · 9.99 MB"
    assert models.file_summary("w4", 1_000_000, "soon") == "**w4** · 1.00 MB"


def test_recipes_start_from_int8_when_it_is_offered() -> None:
    assert models.recipe_bases(LITE0.with_variants((MINE,))) == (
        ["fp16", "dynamic", "int8", "int16x8", "w4", "mine"],
        2,
    )
    few = replace(LITE0, variants=(Variant.ORIGINAL, Variant.FP32, Variant.W4))
    assert models.recipe_bases(few) == (["w4"], 0)


def test_tensor_patterns_are_the_non_blank_lines_stripped() -> None:
    assert models.tensor_patterns("  blocks\\.1[0-5]\\. \n\n\t\nhead\n") == (
        "blocks\\.1[0-5]\\.",
        "head",
    )
    assert models.tensor_patterns("") == ()


def test_recipe_json_is_indented_and_ends_with_a_newline() -> None:
    assert models.recipe_json([{"a": 1}]) == '[\n  {\n    "a": 1\n  }\n]\n'
