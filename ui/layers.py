"""The Layers page's work: its inputs, its cached report, the fix and the search, with progress."""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import streamlit as st

from inference import ModelSpec, decode_image, preprocess
from inference.analysis.benchmark import median_ms
from inference.analysis.evaluate import LabelledImage, LabelledSet, labelled_set
from inference.analysis.layer_report import (
    AnswerChange,
    FloatSelection,
    LayerReport,
    TensorError,
    answer_changes,
    compare_layers,
)
from inference.analysis.rebuild import RebuildCheck, check_rebuild, rebuild_scheme
from inference.analysis.search import SearchResult, SearchStep, search
from inference.core.errors import InputError
from inference.core.specs import AnyVariant
from inference.engine.convert import conversion_record, ensure_recipe, ensure_variants
from inference.engine.runners import LiteRTRunner, Runner
from inference.formats.calibration import calibration_images
from inference.formats.recipes import Recipe, parse_recipe, variant_recipe
from inference.registry.runner_cache import RUNNERS, model_key
from inference.registry.user_models import inspect_model, recipe_variant_spec
from ui.resources import ImageInput, keep_session_variant, session_dir, session_variant

T = TypeVar("T")
MAX_REPORTS_PER_SESSION = 8
MAX_FLIP_REPORTS = 5
"""One-image reports kept for the flipped images the page details."""
MAX_SESSION_INPUT_BYTES = 200_000_000
"""Preprocessed images the page keeps per session, its images and a flip zip's together.

Over it, a set keeps its images encoded (the uploaded bytes, zip members read on
use, file paths) and preprocesses each again when it is used: 2 000 photos at
224x224 would otherwise be 1.2 GB (uploaded zips hold at most 2 000 images,
:data:`inference.analysis.evaluate.MAX_UPLOAD_IMAGES`).
"""
_INPUT_STORES = ("layers_batches", "layers_zip_batches")
"""The session-state entries that hold :class:`Batches`."""

Encoded = bytes | Path | LabelledImage


class DecodedOnUse(Sequence[np.ndarray]):
    """Images kept encoded: each is decoded and preprocessed when read, and not kept."""

    def __init__(self, spec: ModelSpec, sources: list[tuple[str, Encoded]]) -> None:
        self._pre = spec.preprocessing
        self._sources = sources

    def __len__(self) -> int:
        return len(self._sources)

    def _load(self, index: int) -> np.ndarray:
        name, source = self._sources[index]
        data = source.source if isinstance(source, LabelledImage) else source
        return preprocess(decode_image(data, name=name, color_mode=self._pre.color_mode), self._pre)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._load(i) for i in range(*index.indices(len(self)))]
        return self._load(range(len(self))[index])

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self._load(index)


@dataclass(frozen=True)
class Batches:
    """The page's images, each ``(1, H, W, C)``, preprocessed for the model."""

    names: list[str]
    inputs: Sequence[np.ndarray]
    """A list when they fit the session's budget, else :class:`DecodedOnUse`."""
    digest: str
    """Identifies the sources (image bytes, zip bytes) and the model's preprocessing."""

    @property
    def kept_bytes(self) -> int:
        """Preprocessed bytes this set holds."""
        return sum(x.nbytes for x in self.inputs) if isinstance(self.inputs, list) else 0


def _digest(spec: ModelSpec, *parts: bytes) -> str:
    digest = hashlib.sha256(model_key(spec).encode())
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def _kept(name: str, key: str, compute: Callable[[], T]) -> T:
    """A one-entry session store: the value last computed for ``key``, else ``compute()``.

    Reruns of the page (every widget change) must not decode a zip or run
    thousands of predictions again.
    """
    stored = st.session_state.get(name)
    if stored is not None and stored[0] == key:
        return stored[1]
    st.session_state.pop(name, None)  # never the old and the new value at once
    value = compute()
    st.session_state[name] = (key, value)
    return value


def _input_budget(store: str) -> int:
    """Bytes of preprocessed images ``store`` may keep: the session's, less the other stores'."""
    others = 0
    for name in _INPUT_STORES:
        stored = st.session_state.get(name)
        if name != store and stored is not None:
            others += stored[1].kept_bytes
    return MAX_SESSION_INPUT_BYTES - others


def _prepared(
    spec: ModelSpec, sources: list[tuple[str, Encoded]], budget: int, *, skip_unreadable: bool
) -> tuple[list[str], Sequence[np.ndarray]]:
    """The readable images' names and inputs: preprocessed if they all fit ``budget``.

    Otherwise each image is only decoded here, to drop the unreadable ones, and
    is decoded again when used (:class:`DecodedOnUse`).

    Raises:
        InputError: An image cannot be read and ``skip_unreadable`` is false.
    """
    pre = spec.preprocessing
    keep = len(sources) * 4 * math.prod(pre.input_shape) <= budget  # float32
    names: list[str] = []
    inputs: list[np.ndarray] = []
    readable: list[tuple[str, Encoded]] = []
    for name, source in sources:
        data = source.source if isinstance(source, LabelledImage) else source
        try:
            picture = decode_image(data, name=name, color_mode=pre.color_mode)
        except InputError:
            if not skip_unreadable:
                raise
            continue  # a damaged member is not a flip
        names.append(name)
        if keep:
            inputs.append(preprocess(picture, pre))
        else:
            readable.append((name, source))
    return names, inputs if keep else DecodedOnUse(spec, readable)


def image_batches(spec: ModelSpec, images: Sequence[ImageInput], with_calibration: bool) -> Batches:
    """Uploaded and sample images (and optionally the calibration photos), preprocessed; kept."""
    sources = [image.data for image in images]
    key = _digest(spec, *sources, b"calibration" if with_calibration else b"")

    def read() -> Batches:
        sources: list[tuple[str, Encoded]] = [(image.name, image.data) for image in images]
        if with_calibration:
            folders = [spec.calibration_dir] if spec.calibration_dir else None
            sources += [(f"calibration/{p.name}", p) for p in calibration_images(folders)]
        budget = _input_budget("layers_batches")
        names, inputs = _prepared(spec, sources, budget, skip_unreadable=False)
        return Batches(names, inputs, key)

    return _kept("layers_batches", key, read)


def zip_batches(spec: ModelSpec, name: str, data: bytes) -> Batches:
    """The readable images of a labelled zip (named ``class/file``), within the budget; kept.

    Raises:
        InputError: Over 2 000 images, not a labelled zip, or no image can be read.
    """
    key = _digest(spec, data)

    def read() -> Batches:
        sources: list[tuple[str, Encoded]] = [
            (item.name, item) for item in labelled_set(spec, data, name).images
        ]
        budget = _input_budget("layers_zip_batches")
        names, inputs = _prepared(spec, sources, budget, skip_unreadable=True)
        if not names:
            raise InputError(f"{name}: none of its images could be read")
        return Batches(names, inputs, key)

    return _kept("layers_zip_batches", key, read)


def image_worst(
    reference: Path, candidate: Path, batches: Batches, index: int
) -> list[tuple[TensorError, float]]:
    """The tensors with the lowest SNR on one image (a one-image layer report), kept per image.

    The page shows a handful of flipped images, each in an expander whose body
    runs on every rerun; the last few are kept, so a rerun runs none again.
    """
    key = f"{reference}|{candidate}|{batches.digest}|{index}"
    kept: OrderedDict[str, list[tuple[TensorError, float]]] = st.session_state.setdefault(
        "layers_flip_worst", OrderedDict()
    )
    if key not in kept:
        report = compare_layers(reference, candidate, [batches.inputs[index]])
        kept[key] = report.worst_for_image(0)
        while len(kept) > MAX_FLIP_REPORTS:
            kept.popitem(last=False)
    return kept[key]


def layer_report(
    spec: ModelSpec, reference: Path, candidate: Path, batches: Batches
) -> LayerReport:
    """The per-tensor report, kept in this session for the same files and images."""
    reports: dict[tuple[str, ...], LayerReport] = st.session_state.setdefault("layer_reports", {})
    key = (model_key(spec), str(reference), str(candidate), batches.digest)
    if key not in reports:
        with st.spinner(f"Comparing {len(batches.inputs)} image(s) tensor by tensor…"):
            reports[key] = compare_layers(reference, candidate, batches.inputs)
        while len(reports) > MAX_REPORTS_PER_SESSION:
            reports.pop(next(iter(reports)))
    return reports[key]


def uploaded_candidate(spec: ModelSpec, name: str, data: bytes) -> ModelSpec:
    """A quantized ``.tflite`` someone brought as the candidate, checked in a child.

    It runs with ``spec``'s labels and preprocessing; kept for the session, by content.

    Raises:
        InputError: The checker child refuses the file (corrupt, too large, not a classifier).
    """
    uploads: dict[str, ModelSpec] = st.session_state.setdefault("layers_uploads", {})
    digest = hashlib.sha256(data).hexdigest()[:16]
    if digest not in uploads:
        path = session_dir() / f"candidate-{digest}.tflite"  # never the uploaded name
        path.write_bytes(data)
        try:
            with st.spinner(f"Checking {name}…"):
                inspect_model(path)  # in a child, within memory and time limits
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        uploads[digest] = recipe_variant_spec(spec, path, name)
    return uploads[digest]


@dataclass(frozen=True)
class Rebuilt:
    """A file made elsewhere, read back as a recipe and rebuilt from this model's float file."""

    recipe: Recipe
    path: Path
    check: RebuildCheck


def rebuilt_upload(spec: ModelSpec, own: ModelSpec, batches: Batches) -> Rebuilt:
    """``own``'s scheme as a recipe, its rebuild, and how the rebuild compares (kept per file)."""
    assert own.path is not None

    def rebuild() -> Rebuilt:
        with st.spinner(f"Reading {own.title}'s quantization and rebuilding it from fp32…"):
            scheme, path = rebuild_scheme(spec, own.path)
            check = check_rebuild(own.path, path, list(batches.inputs[:4]), scheme)
        return Rebuilt(scheme.recipe, path, check)

    return _kept("layers_rebuilt", f"{own.fingerprint}|{model_key(spec)}", rebuild)


def candidate_recipe(
    candidate: AnyVariant, rebuilt: Rebuilt | None, *, uploaded: bool
) -> Recipe | None:
    """The recipe that makes the page's candidate from the float file, where there is one.

    An uploaded file has one only when its read-back recipe rebuilt it exactly; it
    never falls back to the variant picked in the Candidate box.
    """
    if uploaded:
        return rebuilt.recipe if rebuilt is not None and rebuilt.check.same else None
    return variant_recipe(candidate) if candidate.is_quantized else None


def build_fixed_file(
    spec: ModelSpec,
    reference: AnyVariant,
    own: ModelSpec,
    rebuilt: Rebuilt,
    batches: Batches,
    selection: FloatSelection,
    report: LayerReport,
) -> Fixed:
    """The uploaded file's scheme, rebuilt with the selection in float; measured against it."""
    recipe = selection.apply(rebuilt.recipe, report)
    with st.status(f"Rebuilding {own.title} with {recipe.name}…", expanded=True) as box:
        bar = st.progress(0.0)
        path = ensure_recipe(
            spec, recipe, progress=lambda text, done: bar.progress(done, text=text)
        )
        box.update(label=f"Built {recipe.name}", state="complete", expanded=False)
    ref_runner = RUNNERS.get(spec, reference)
    plain = RUNNERS.get(own, own.variants[0])
    made = recipe_variant_spec(spec, path, recipe.name)
    batch = batches.inputs[0]
    with LiteRTRunner(made, made.variants[0], path) as fixed:
        rows = [
            _measure(own.title, plain, answer_changes(ref_runner, plain, batches.inputs), batch),
            _measure(
                "with ops in float", fixed, answer_changes(ref_runner, fixed, batches.inputs), batch
            ),
        ]
    return Fixed(spec.name, path, recipe.rules, rows)


def shown_changes(reference: Runner, candidate: Runner, batches: Batches) -> list[AnswerChange]:
    """Both sides' answers on every image, kept for the same runners and images."""
    key = "|".join(
        (model_key(reference.spec), reference.variant.value, model_key(candidate.spec),
         candidate.variant.value, batches.digest)
    )  # fmt: skip
    return _kept(
        "layers_changes", key, lambda: answer_changes(reference, candidate, batches.inputs)
    )


@dataclass(frozen=True)
class Fixed:
    base: str
    path: Path
    recipe: list[dict[str, object]]
    rows: list[dict[str, object]]


def _measure(name: str, runner: Runner, changes: list[AnswerChange], batch: np.ndarray) -> dict:
    return {
        "variant": name,
        "same top-1 as reference": float(np.mean([not c.flipped for c in changes])),
        "mean largest Δp": float(np.mean([c.largest_change for c in changes])),
        "median ms": median_ms(runner, batch),
        "size MB": runner.size_bytes / 1e6,
    }


def build_fixed_variant(
    spec: ModelSpec,
    reference: AnyVariant,
    candidate: AnyVariant,
    batches: Batches,
    selection: FloatSelection,
    report: LayerReport,
) -> Fixed:
    """Build ``candidate`` with the selection in float; measure it by the plain one."""
    recipe = selection.apply(variant_recipe(candidate), report)
    offering, variant = session_variant(spec, recipe)
    with st.status(f"Quantizing {spec.title} as {variant.value}…", expanded=True) as box:
        bar = st.progress(0.0)
        path = ensure_variants(
            offering, [variant], progress=lambda text, done: bar.progress(done, text=text)
        )[variant]
        box.update(label=f"Built {variant.value} ({recipe.name})", state="complete", expanded=False)
    keep_session_variant(spec, variant)
    ref_runner = RUNNERS.get(spec, reference)
    plain = RUNNERS.get(spec, candidate)
    fixed = LiteRTRunner(offering, variant, path)
    batch = batches.inputs[0]
    rows = [
        _measure(candidate.value, plain, answer_changes(ref_runner, plain, batches.inputs), batch),
        _measure(variant.value, fixed, answer_changes(ref_runner, fixed, batches.inputs), batch),
    ]
    fixed.close()
    return Fixed(spec.name, path, conversion_record(path).get("recipe", recipe.rules), rows)


@dataclass(frozen=True)
class Found:
    model: str
    result: SearchResult
    rows: list[dict[str, object]]


def run_search(
    spec: ModelSpec,
    dataset: LabelledSet,
    max_drop: float,
    variant: AnyVariant,
    ranking: Sequence[str] | None = None,
) -> Found:
    """The accuracy-bounded search with each step shown as it finishes.

    ``ranking``: a sensitivity scan's tensors, most sensitive first (default: own error).
    """
    with st.status(f"Searching {spec.title} {variant.value} within {max_drop:g} points…") as box:
        log = st.empty()
        lines: list[str] = []

        def show(step: SearchStep) -> None:
            lines.append(
                f"{len(step.kept)} tensor(s) in float: accuracy {step.accuracy:.2%}, drop "
                f"{step.drop_points:+.2f} pt, {step.median_ms:.2f} ms, "
                f"{step.size_bytes / 1e6:.2f} MB (built in {step.build_seconds:.1f} s)"
            )
            log.markdown("\n".join(f"- {line}" for line in lines))

        result = search(
            spec, dataset, max_drop=max_drop, variant=variant, ranking=ranking, on_step=show
        )
        box.update(label=f"Searched {len(result.steps)} step(s)", state="complete")
    if result.chosen is not None:
        # The chosen step's recipe becomes a variant of the model; its file is named after
        # the variant, so it is written once more (1-4 s) under that name.
        rules = conversion_record(result.chosen.path).get("recipe")
        if rules:
            recipe = parse_recipe(json.dumps(rules), name=f"{variant.value}-within-{max_drop:g}pt")
            offering, made = session_variant(spec, recipe)
            with st.spinner(f"Saving the chosen step as {made.value}…"):
                ensure_variants(offering, [made])
            keep_session_variant(spec, made)
    rows = [
        {
            "step": i,
            "kept float": len(step.kept),
            "accuracy": step.accuracy,
            "drop (pt)": round(step.drop_points, 3),
            "median ms": round(step.median_ms, 3),
            "size MB": round(step.size_bytes / 1e6, 3),
            "chosen": step is result.chosen,
        }
        for i, step in enumerate(result.steps)
    ]
    return Found(spec.name, result, rows)
