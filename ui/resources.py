"""Shared runners, per-session state and the pages' error policy.

Runners come from :data:`inference.registry.runner_cache.RUNNERS`: one copy per
(model, variant) for every session and for the REST API, bounded so the app
stays inside Community Cloud's 2.7 GB. Runners are thread-safe (LiteRT calls
hold a lock; Keras runs a ``tf.function``), which a value shared by all
sessions requires.

Results live in each session's state, keyed by image digest, model and
variant, so a rerun that changes nothing does not run inference again and the
timings shown are the ones measured when the result was computed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import streamlit as st
from PIL import Image

from inference import ZOO, ModelSpec, Prediction, Runner, classify_decoded, decode_image
from inference.core.errors import InputError, one_line
from inference.core.specs import AnyVariant, RecipeVariant, suggest_variant_name
from inference.engine.convert import ensure_variants, is_converted
from inference.engine.executors import open_engine
from inference.engine.shards import Engine, configured_ray_address
from inference.formats.images import draft_size, preprocess
from inference.formats.recipes import Recipe
from inference.pipeline import Pipeline, PipelineOptions
from inference.registry.background_conversions import Conversion
from inference.registry.catalog import MAX_SESSION_VARIANTS, Session, resolve_spec
from inference.registry.runner_cache import model_key

log = logging.getLogger("quantlens.ui")

MAX_RESULTS_PER_SESSION = 400
RESULT_TOP_K = 10
"""Results keep the top 10; the pages slice what the person asked for."""


@st.cache_resource(show_spinner=False)
def _cluster(address: str) -> Engine:
    return open_engine(ray_address=address)


def cluster() -> Engine | None:
    """The Ray cluster the app is configured with (``QUANTLENS_RAY_ADDRESS``), else None.

    Joined once per server process, when a run first needs it; without an address
    nothing of Ray is imported.

    Raises:
        UsageError: Ray is missing or the cluster cannot be reached.
    """
    address = configured_ray_address()
    return _cluster(address) if address else None


def show_error(exc: BaseException, context: str) -> None:
    """The pages' error policy: one line for the person; a bug's traceback goes to the log."""
    st.error(one_line(exc, context=context, log=log), icon=":material/warning:")


def visitor() -> Session:
    """This visitor's own models and recipe variants (see :mod:`inference.registry.catalog`)."""
    if "visitor" not in st.session_state:
        st.session_state["visitor"] = Session()
    return st.session_state["visitor"]


def available_specs() -> dict[str, ModelSpec]:
    """The zoo, then the models this session uploaded, each with its recipe variants."""
    session = visitor()
    return {name: resolve_spec(name, session) for name in [*ZOO, *session.models]}


def session_variant(spec: ModelSpec, recipe: Recipe) -> tuple[ModelSpec, RecipeVariant]:
    """The variant ``recipe`` makes of ``spec`` in this session, and ``spec`` offering it.

    A recipe this session already added keeps its name; a new one gets a name
    made from the recipe's. Call :func:`keep_session_variant` once its file is
    built, so a failed build never lists it.

    Raises:
        InputError: The session already added the most variants allowed to this model.
    """
    spec = resolve_spec(spec, visitor())
    for variant in spec.recipe_variants:
        if variant.recipe == recipe.text:
            return spec, variant
    mine = visitor().variants.get(spec.name, {})
    if len(mine) >= MAX_SESSION_VARIANTS:
        raise InputError(
            f"this session already added {len(mine)} variants to {spec.title}, the most allowed"
        )
    variant = RecipeVariant(
        suggest_variant_name(recipe.name, tuple(v.value for v in spec.variants)), recipe.text
    )
    return spec.with_variants((variant,)), variant


def keep_session_variant(spec: ModelSpec, variant: RecipeVariant) -> None:
    """List ``variant`` with ``spec``'s variants on every page, for this session."""
    visitor().add_variant(spec, variant)


class _SessionFolder:
    """A temporary folder removed when the session's state is garbage collected."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="quantlens-session-"))
        weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)


def session_dir() -> Path:
    """A temporary folder for this session's uploads; user file names are never used.

    Streamlit has no end-of-session hook; the folder goes with the session state.
    """
    if "session_folder" not in st.session_state:
        st.session_state["session_folder"] = _SessionFolder()
    return st.session_state["session_folder"].path


def unconverted(spec: ModelSpec, variants: Sequence[AnyVariant]) -> list[AnyVariant]:
    """The TFLite variants among ``variants`` whose file is not cached yet, in their order."""
    return [v for v in variants if v.is_tflite and not is_converted(spec, v)]


def ensure_converted(spec: ModelSpec, variants: Sequence[AnyVariant]) -> None:
    """Convert the variants that are not cached yet, showing progress while it runs."""
    missing = unconverted(spec, variants)
    if not missing:
        return
    names = ", ".join(v.value for v in missing)
    with st.status(f"Converting {spec.title} to {names} (first use only)…", expanded=True) as box:
        bar = st.progress(0.0, text="starting the converter")
        start = time.perf_counter()
        ensure_variants(spec, missing, progress=lambda text, done: bar.progress(done, text=text))
        box.update(
            label=f"Converted {spec.title} to {names} in {time.perf_counter() - start:.0f} s",
            state="complete",
            expanded=False,
        )


def pending_conversion(spec: ModelSpec, job: Conversion, pending: Sequence[AnyVariant]) -> None:
    """Progress of a background conversion; the page reruns as each variant becomes ready."""

    @st.fragment(run_every=1.0)
    def watch() -> None:
        if job.done.is_set() or any(is_converted(spec, v) for v in pending):
            st.rerun()  # the whole page: the ready variant joins the results
        names = ", ".join(v.value for v in pending)
        st.progress(
            min(job.fraction, 1.0),
            text=f"Converting {spec.title} to {names} (first use only): {job.message} · "
            f"{job.seconds:.0f} s",
        )
        st.caption("The variants that are ready answer below; each of these joins them when done.")

    watch()


def get_runners(spec: ModelSpec, variants: Sequence[AnyVariant]) -> dict[AnyVariant, Runner]:
    """Runners for ``variants``, converting first if needed. Errors are shown, not raised.

    The pages resolve and load through the same :class:`~inference.pipeline.Pipeline`
    as the CLI and the API, with the process's shared runners and this visitor's variants.
    """
    runners: dict[AnyVariant, Runner] = {}
    if not variants:
        return runners
    try:
        ensure_converted(spec, variants)
        pipeline = Pipeline(spec, variants, session=visitor(), options=PipelineOptions(shared=True))
    except Exception as exc:
        show_error(exc, f"converting {spec.title}")
        return runners
    for variant in pipeline.variants:
        try:
            with st.spinner(f"Loading {spec.title} ({variant.value})…"):
                runners[variant] = pipeline.runner(variant)
        except Exception as exc:
            show_error(exc, f"{spec.title} ({variant.value})")
    return runners


class Upload(Protocol):
    """A file the person uploaded, as the pages get it (Streamlit's ``UploadedFile``)."""

    name: str

    def getvalue(self) -> bytes: ...


@dataclass(frozen=True)
class ImageInput:
    """One image the person gave, as bytes with a display name."""

    name: str
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]


def distinct_images(images: Sequence[ImageInput]) -> list[ImageInput]:
    """One entry per distinct content, each under a name no other entry has.

    Two phones both send ``image.jpg``: results are keyed by content, and tables
    and charts by name, so the second becomes ``image (2).jpg``. The same
    content given twice is shown once, under its first name.
    """
    seen: set[str] = set()
    names: set[str] = set()
    distinct = []
    for image in images:
        if image.digest in seen:
            continue
        seen.add(image.digest)
        name, number = image.name, 2
        stem, dot, suffix = image.name.rpartition(".")
        while name in names:
            name = f"{stem} ({number}).{suffix}" if dot else f"{image.name} ({number})"
            number += 1
        names.add(name)
        distinct.append(image if name == image.name else ImageInput(name, image.data))
    return distinct


@dataclass(frozen=True)
class Shown:
    """One image's outcome on a page: the decoded picture and each variant's result."""

    image: ImageInput
    picture: Image.Image
    results: dict[AnyVariant, Prediction]


def _results() -> OrderedDict[tuple[str, ...], Prediction]:
    return st.session_state.setdefault("results", OrderedDict())


def _decode(image: ImageInput, spec: ModelSpec) -> tuple[Image.Image, float]:
    """Decode (timed) at the model's draft size; raises InputError for bad files."""
    start = time.perf_counter()
    pre = spec.preprocessing
    picture = decode_image(
        image.data, name=image.name, color_mode=pre.color_mode, min_size=draft_size(pre)
    )
    return picture, (time.perf_counter() - start) * 1e3


def predict_images(
    images: Sequence[ImageInput],
    spec: ModelSpec,
    runners: dict[AnyVariant, Runner],
    *,
    remeasure: bool = False,
) -> list[Shown]:
    """Every variant's result for every image: from this session's store, or computed now.

    Each image is decoded once and each runner warmed once per call. An image
    that fails is shown as one line (the pages' error policy) and skipped.
    """
    store = _results()
    warmed: set[AnyVariant] = set()
    shown = []
    for image in images:
        keys = {v: (image.digest, model_key(spec), v.value) for v in runners}
        try:
            picture, decode_ms = _decode(image, spec)
            for variant, key in keys.items():
                if not remeasure and key in store:
                    continue
                runner = runners[variant]
                if variant not in warmed:
                    # One untimed call first, as benchmark tools discard warm-up runs:
                    # inside a Streamlit run, TensorFlow's first tf.function call costs
                    # 300-500 ms more (measured here, TF 2.21; not reproduced outside).
                    runner.predict(preprocess(picture, spec.preprocessing))
                    warmed.add(variant)
                store[key] = classify_decoded(
                    runner, picture, name=image.name, k=RESULT_TOP_K, decode_ms=decode_ms
                )
        except Exception as exc:
            show_error(exc, f"{image.name} with {spec.title}")
            continue
        for key in keys.values():
            store.move_to_end(key)
        shown.append(Shown(image, picture, {v: store[key] for v, key in keys.items()}))
    while len(store) > MAX_RESULTS_PER_SESSION:
        store.popitem(last=False)
    return shown


def repeat_timings(
    shown: Shown, spec: ModelSpec, variant: AnyVariant, runner: Runner, runs: int
) -> list[float]:
    """Inference milliseconds of ``runs`` repeated calls, kept per session like results."""
    timings: dict[tuple[str, ...], list[float]] = st.session_state.setdefault("timings", {})
    key = (shown.image.digest, model_key(spec), variant.value, str(runs))
    if key not in timings:
        batch = preprocess(shown.picture, spec.preprocessing)
        runner.predict(batch)  # warm-up, not timed (see predict_images)
        measured = []
        for _ in range(runs):
            start = time.perf_counter()
            runner.predict(batch)
            measured.append((time.perf_counter() - start) * 1e3)
        if len(timings) >= MAX_RESULTS_PER_SESSION:
            timings.pop(next(iter(timings)))
        timings[key] = measured
    return timings[key]
