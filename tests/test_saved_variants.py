"""Recipe variants saved under a name: next to the built-in variants in the CLI and pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference import ZOO, InputError, UsageError, Variant
from inference.core.paths import variants_dir
from inference.core.specs import (
    ModelSpec,
    RecipeVariant,
    check_variant_name,
    parse_variants,
    suggest_variant_name,
)
from inference.engine.convert import variant_path
from inference.formats.recipes import builtin_recipe
from inference.registry.saved_variants import (
    forget_variant,
    save_variant,
    saved_variants,
    with_saved,
)
from tests.conftest import run_cli

FASHION = ZOO["fashion_mnist_cnn"]
SOFTMAX_FLOAT = builtin_recipe(Variant.INT8).keeping_float(operations=("SOFTMAX",))


def test_a_recipe_variant_travels_with_its_spec_as_json() -> None:
    mine = RecipeVariant("int8-softmax", SOFTMAX_FLOAT.text, ("/data/calibration",))
    spec = FASHION.with_variants((mine,))

    again = ModelSpec.from_json(json.loads(json.dumps(spec.to_json())))

    assert again == spec
    assert again.variants[-1] == mine and again.variant("int8-softmax") == mine
    assert again.recipe_variants == (mine,)


def test_variant_names_are_checked() -> None:
    assert check_variant_name("int8-softmax") == "int8-softmax"
    with pytest.raises(UsageError, match="built-in variant"):
        check_variant_name("int8")
    for bad in ("Int8", "8bit", "a b", "x" * 33, ""):
        with pytest.raises(UsageError, match="expected a variant name"):
            check_variant_name(bad)
    assert suggest_variant_name("int8, float: SOFTMAX") == "int8-float-softmax"
    assert suggest_variant_name("int8") == "int8-2"
    assert suggest_variant_name("8 bit", ("r-8-bit",)) == "r-8-bit-2"


def test_parse_variants_offers_recipe_variants_by_name() -> None:
    spec = FASHION.with_variants((RecipeVariant("mine", SOFTMAX_FLOAT.text),))

    assert parse_variants("int8,mine", spec.variants) == (Variant.INT8, spec.variant("mine"))
    with pytest.raises(UsageError, match=r"expected variant to be one of \{.*mine\}"):
        parse_variants("yours", spec.variants)
    with pytest.raises(InputError, match="expected variant to be one of"):
        FASHION.variant("mine")  # only the spec it was added to offers it


def test_a_saved_variant_is_listed_replaced_and_forgotten() -> None:
    first = save_variant(FASHION, "keep-softmax", SOFTMAX_FLOAT)
    assert with_saved(FASHION).variants == (*FASHION.variants, first)

    w4 = builtin_recipe(Variant.W4)
    second = save_variant(FASHION, "keep-softmax", w4)  # the same name replaces it
    assert saved_variants(FASHION) == (second,)
    assert variant_path(with_saved(FASHION), second) != variant_path(
        FASHION.with_variants((first,)), first
    )  # the cache key follows the recipe, not the name

    forget_variant(FASHION, "keep-softmax")
    assert with_saved(FASHION) == FASHION
    with pytest.raises(InputError, match="no saved variant 'keep-softmax'"):
        forget_variant(FASHION, "keep-softmax")


def test_a_broken_registry_entry_is_skipped(conversion_cache: Path) -> None:
    good = save_variant(FASHION, "good", SOFTMAX_FLOAT)
    registry = variants_dir() / f"{FASHION.name}.json"
    entries = json.loads(registry.read_text())
    entries.append({"name": "bad", "recipe": '[{"regex": "("}]'})
    entries.append({"name": "Not A Name", "recipe": SOFTMAX_FLOAT.text})
    registry.write_text(json.dumps(entries))  # the session's cache: cleared after the test

    assert saved_variants(FASHION) == (good,)


@pytest.mark.slow
def test_a_saved_variant_is_usable_by_name_in_predict_bench_and_evaluate() -> None:
    sample = FASHION.labelled_sample
    assert sample is not None
    made = run_cli("quantize", "--model", "fashion_mnist_cnn", "--recipe", "int8",
                   "--keep-float-op", "SOFTMAX", "--name", "int8-softmax", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = Path(json.loads(made.stdout)["path"])
    assert path.name.startswith("fashion_mnist_cnn-int8-softmax-")
    try:
        bags = sorted((sample / "bag").glob("*.png"))[:3]
        predicted = run_cli("predict", *map(str, bags), "--model", "fashion_mnist_cnn",
                            "--variant", "int8,int8-softmax", "--json")  # fmt: skip
        assert predicted.returncode == 0, predicted.stderr
        assert "int8-softmax done" not in predicted.stderr  # the saved file is found, not rebuilt
        rows = json.loads(predicted.stdout)
        assert [r["variant"] for r in rows] == ["int8", "int8-softmax"] * 3
        assert all(r["top_k"][0]["label"] == "Bag" for r in rows)

        benched = run_cli("bench", "--models", "fashion_mnist_cnn", "--variants",
                          "int8-softmax", "--runs", "3", "--format", "json")  # fmt: skip
        assert benched.returncode == 0, benched.stderr
        (row,) = json.loads(benched.stdout)["results"]
        assert row["variant"] == "int8-softmax" and row["size MB"] == round(
            path.stat().st_size / 1e6, 2
        )
        assert row["convert s"] > 0

        scored = run_cli("evaluate", "--model", "fashion_mnist_cnn", "--data", str(sample),
                         "--variants", "fp32,int8-softmax", "--format", "json")  # fmt: skip
        assert scored.returncode == 0, scored.stderr
        summary = {s["variant"]: s for s in json.loads(scored.stdout)["summary"]}
        assert summary["int8-softmax"]["accuracy"] > 0.8
        assert summary["int8-softmax"]["agreement"] > 0.9
    finally:
        forget_variant(FASHION, "int8-softmax")
