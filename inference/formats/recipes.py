"""Quantization recipes: ai-edge-quantizer's JSON rule lists, as data the app checks and caches.

A recipe is a list of rules ``{"regex", "operation", "algorithm_key",
"op_config"}`` in the format of Google's ``ai-edge-quantizer``: each rule
says how ops whose output tensor names match ``regex`` (and whose type is
``operation``, or ``"*"``) are quantized; later rules win. The built-in
variants are recipes in ``inference/recipes/``; people bring their own as
files, and "keep these layers in float" appends ``no_quantize`` rules.

Recipes from strangers are checked here before any quantizer sees them: a
size limit, JSON shape, known fields, and regexes that compile (with a length
limit, so a pathological pattern cannot stall the server). The quantizer
checks the numeric settings itself, in its child process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.core.errors import InputError
from inference.core.specs import AnyVariant, RecipeVariant, Variant

__all__ = [
    "BUILTIN_DIR",
    "MAX_RECIPE_BYTES",
    "Recipe",
    "builtin_recipe",
    "load_recipe",
    "parse_recipe",
    "tensor_regex",
    "variant_recipe",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_recipes"
MAX_RECIPE_BYTES = 256_000
MAX_RULES = 500
MAX_REGEX_CHARS = 500
_RULE_KEYS = {"regex", "operation", "algorithm_key", "op_config"}
_OPERATION = re.compile(r"^(\*|[A-Z][A-Z0-9_]*)$")
_ALGORITHM = re.compile(r"^[a-z][a-z0-9_]*$")
NO_QUANTIZE = "no_quantize"


@dataclass(frozen=True)
class Recipe:
    """A named, checked recipe; ``text`` is its canonical JSON (the cache key's part)."""

    name: str
    text: str
    ranges: str = ""
    """Canonical JSON ``{tensor: [min, max]}`` of activation ranges to use instead of
    calibrating (read from a file made elsewhere, :mod:`inference.formats.file_scheme`)."""

    @property
    def rules(self) -> list[dict[str, Any]]:
        return json.loads(self.text)

    @property
    def digest(self) -> str:
        return hashlib.sha256((self.text + self.ranges).encode()).hexdigest()[:12]

    def with_ranges(self, ranges: dict[str, list[float]]) -> Recipe:
        """This recipe with fixed activation ranges (no calibration)."""
        return dataclasses.replace(self, ranges=json.dumps(ranges, sort_keys=True))

    @property
    def needs_calibration(self) -> bool:
        """Static quantization (integer activations) measures ranges on sample images."""
        if self.ranges:
            return False
        return any(
            rule["algorithm_key"] != NO_QUANTIZE
            and rule.get("op_config", {}).get("activation_tensor_config") is not None
            for rule in self.rules
        )

    def keeping_float(
        self, tensors: tuple[str, ...] = (), operations: tuple[str, ...] = ()
    ) -> Recipe:
        """This recipe with ``no_quantize`` rules for matching tensors (regexes) and op types.

        Raises:
            InputError: A regex does not compile or an op type is not a TFLite op name.
        """
        extra = [{"regex": r, "operation": "*", "algorithm_key": NO_QUANTIZE} for r in tensors]
        # A regex of its own per op type: ai-edge-quantizer merges rules that share a
        # regex into the first one's place, where a later per-op rule would override it.
        extra += [
            {"regex": f".*(?#float {op.upper()})", "operation": op.upper(),
             "algorithm_key": NO_QUANTIZE}
            for op in operations
        ]  # fmt: skip
        if not extra:
            return self
        kept = ", ".join([*tensors, *(op.upper() for op in operations)])
        if len(kept) > 60:  # a name is shown in tables and file names: keep it short
            parts = [f"{len(tensors)} tensors"] if tensors else []
            parts += [op.upper() for op in operations]
            kept = ", ".join(parts)
        made = parse_recipe(json.dumps([*self.rules, *extra]), name=f"{self.name}, float: {kept}")
        return dataclasses.replace(made, ranges=self.ranges)


def tensor_regex(tensor: str) -> str:
    """A rule regex that matches exactly the op producing ``tensor``.

    ai-edge-quantizer matches rules against an op's *scope*: its output tensor
    names joined by ';', with a trailing ';' (Model Explorer's convention).
    """
    return f"^{re.escape(tensor)};"


def _check_rule(index: int, rule: Any, name: str) -> dict[str, Any]:
    where = f"{name}: rule {index + 1}"
    if not isinstance(rule, dict):
        raise InputError(f"{where}: expected an object with regex, operation, algorithm_key")
    unknown = set(rule) - _RULE_KEYS
    if unknown:
        raise InputError(
            f"{where}: unknown field {sorted(unknown)[0]!r}; expected only {sorted(_RULE_KEYS)}"
        )
    for key in ("regex", "operation", "algorithm_key"):
        if not isinstance(rule.get(key), str):
            raise InputError(f"{where}: expected {key!r} to be a string")
    if len(rule["regex"]) > MAX_REGEX_CHARS:
        raise InputError(f"{where}: a regex over {MAX_REGEX_CHARS} characters is refused")
    try:
        re.compile(rule["regex"])
    except re.error as exc:
        raise InputError(f"{where}: regex {rule['regex']!r} does not compile ({exc})") from None
    if not _OPERATION.match(rule["operation"]):
        raise InputError(
            f"{where}: expected operation to be '*' or a TFLite op name such as CONV_2D; "
            f"received {rule['operation']!r}"
        )
    if not _ALGORITHM.match(rule["algorithm_key"]):
        raise InputError(f"{where}: expected an algorithm_key such as 'min_max_uniform_quantize'")
    if rule["algorithm_key"] != NO_QUANTIZE and not isinstance(rule.get("op_config"), dict):
        raise InputError(f"{where}: expected an 'op_config' object for {rule['algorithm_key']!r}")
    return rule


def parse_recipe(text: str | bytes, *, name: str) -> Recipe:
    """Check a recipe's JSON and return it in canonical form.

    Raises:
        InputError: Too large, not JSON, not a list of rules, or a rule is malformed.
    """
    if len(text) > MAX_RECIPE_BYTES:
        raise InputError(f"{name}: a recipe over {MAX_RECIPE_BYTES // 1000} KB is refused")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise InputError(f"{name}: expected a JSON list of rules (ai-edge-quantizer's format)")
    if len(data) > MAX_RULES:
        raise InputError(f"{name}: {len(data)} rules; at most {MAX_RULES} are accepted")
    rules = [_check_rule(i, rule, name) for i, rule in enumerate(data)]
    return Recipe(name=name, text=json.dumps(rules, sort_keys=True, separators=(",", ":")))


@functools.cache  # asked for on every page rerun (cache keys); the files ship with the code
def builtin_recipe(variant: Variant) -> Recipe:
    """The recipe that makes ``variant`` from the float model.

    Raises:
        InputError: The variant is not made by a recipe (original, fp32).
    """
    path = BUILTIN_DIR / f"{variant.value}.json"
    if not path.is_file():
        raise InputError(f"{variant.value} is not made by a quantization recipe")
    return parse_recipe(path.read_text(encoding="utf-8"), name=variant.value)


@functools.lru_cache(maxsize=64)  # variants are asked for their path on every page rerun
def variant_recipe(variant: AnyVariant) -> Recipe:
    """The recipe that makes ``variant``: built in, or the one saved with it.

    Raises:
        InputError: The variant is not made by a recipe, or its saved recipe is invalid.
    """
    if isinstance(variant, RecipeVariant):
        return parse_recipe(variant.recipe, name=variant.value)
    return builtin_recipe(variant)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A built-in recipe by variant name (``int8``), or a recipe JSON file.

    Raises:
        InputError: Neither a built-in name nor a readable, valid recipe file.
    """
    text = str(name_or_path)
    if (BUILTIN_DIR / f"{text}.json").is_file():
        return builtin_recipe(Variant(text))
    path = Path(name_or_path)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in BUILTIN_DIR.glob("*.json")))
        raise InputError(
            f"expected a recipe name ({names}) or a recipe .json file; received {text!r}"
        )
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise InputError(f"{path.name}: a recipe over {MAX_RECIPE_BYTES // 1000} KB is refused")
    return parse_recipe(path.read_bytes(), name=path.stem)
