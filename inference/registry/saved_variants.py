"""Recipe variants saved under a name, so they stand next to the built-in ones.

``python -m inference quantize --model M --recipe FILE --name mine`` saves the
recipe (and its calibration set, if one was given) in
``$QUANTLENS_CACHE_DIR/variants/<model>.json``; from then on ``--variant mine``
works in ``predict``, ``bench``, ``evaluate`` and ``layers``, and the pages
list ``mine`` among the model's variants. The file is rebuilt from the recipe
whenever the cache lacks it, like any built-in variant's. Pages keep the
variants a visitor makes in that visitor's session instead (see ``ui/``), so one
visitor's recipes never show up for another.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from inference.core.child_process import write_atomically
from inference.core.errors import InputError
from inference.core.paths import variants_dir
from inference.core.specs import ModelSpec, RecipeVariant, check_variant_name
from inference.formats.recipes import MAX_RECIPE_BYTES, Recipe, parse_recipe

__all__ = ["MAX_SAVED_VARIANTS", "forget_variant", "save_variant", "saved_variants", "with_saved"]

MAX_SAVED_VARIANTS = 50
"""Per model: the registry is read on every spec lookup, so it stays small."""
_LOCK = threading.Lock()


def _registry(spec: ModelSpec) -> Path:
    return variants_dir() / f"{spec.name}.json"


def saved_variants(spec: ModelSpec) -> tuple[RecipeVariant, ...]:
    """The variants saved for ``spec``; an unreadable registry or entry is skipped."""
    path = _registry(spec)
    try:
        if path.stat().st_size > MAX_SAVED_VARIANTS * (MAX_RECIPE_BYTES + 10_000):
            return ()
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    variants = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            variant = RecipeVariant.from_json(entry)
            parse_recipe(variant.recipe, name=variant.value)
        except (InputError, KeyError, TypeError, ValueError):
            continue  # a hand-edited entry that no longer parses is not offered
        variants.append(variant)
    return tuple(variants)


def with_saved(spec: ModelSpec) -> ModelSpec:
    """``spec`` with its saved recipe variants after the built-in ones."""
    if not any(v.is_quantized for v in spec.variants):
        return spec  # an already quantized file runs only as itself
    saved = saved_variants(spec)
    return spec.with_variants(saved) if saved else spec


def save_variant(
    spec: ModelSpec, name: str, recipe: Recipe, calibration: tuple[Path, ...] = ()
) -> RecipeVariant:
    """Save ``recipe`` as ``spec``'s variant ``name`` (replacing one of that name).

    Raises:
        UsageError: The name is invalid or a built-in variant's.
        InputError: The model has no float file to quantize, or too many saved variants.
    """
    check_variant_name(name)
    if not any(v.is_quantized for v in spec.variants):
        raise InputError(f"{spec.title} is already quantized; it has no other variants")
    variant = RecipeVariant(name, recipe.text, tuple(str(p.resolve()) for p in calibration))
    with _LOCK:
        kept = [v for v in saved_variants(spec) if v.value != name]
        if len(kept) >= MAX_SAVED_VARIANTS:
            raise InputError(
                f"{spec.name} has {len(kept)} saved variants, the most allowed; "
                f"remove some from {_registry(spec)}"
            )
        _write(spec, [*kept, variant])
    return variant


def forget_variant(spec: ModelSpec, name: str) -> None:
    """Remove the saved variant ``name`` (its cached file stays until the cache sweeps it).

    Raises:
        InputError: ``spec`` has no saved variant of that name.
    """
    with _LOCK:
        saved = saved_variants(spec)
        if name not in {v.value for v in saved}:
            names = ", ".join(v.value for v in saved) or "none"
            raise InputError(f"{spec.name} has no saved variant {name!r} (saved: {names})")
        _write(spec, [v for v in saved if v.value != name])


def _write(spec: ModelSpec, variants: list[RecipeVariant]) -> None:
    path = _registry(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps([v.to_json() for v in variants], indent=1).encode())
