"""Cached runners and per-session state shared by the pages.

Runners live in ``st.cache_resource``: one copy per (model, variant) for every
session, bounded so the app stays inside Community Cloud's 2.7 GB. Runners are
thread-safe (LiteRT calls hold a lock; Keras runs a ``tf.function``), which a
value shared by all sessions requires.

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

import streamlit as st
from PIL import Image

from inference import (
    ZOO,
    InferenceError,
    InputError,
    ModelSpec,
    Prediction,
    Runner,
    Variant,
    classify_decoded,
    decode_image,
    load_runner,
    preprocess,
)
from inference.convert import ensure_variants, is_converted
from inference.preprocess import draft_size

log = logging.getLogger("quantlens.ui")

MAX_CACHED_RUNNERS = 8
"""Runners kept for all sessions: the five variants of one model plus a few more."""
MAX_RESULTS_PER_SESSION = 400
RESULT_TOP_K = 10
"""Results keep the top 10; the pages slice what the person asked for."""


@st.cache_resource(max_entries=MAX_CACHED_RUNNERS, show_spinner=False)
def cached_runner(model_key: str, variant: str, _spec: ModelSpec) -> Runner:
    """One runner per (model, variant), shared by every session.

    ``model_key`` identifies the weights (custom models by file digest);
    ``_spec`` is not hashed.
    """
    return load_runner(_spec, variant)


def model_key(spec: ModelSpec) -> str:
    """Identifies a runner: the weights, and the labels and scaling it answers with.

    Two people uploading the same file with different labels must not share answers.
    """
    served = hashlib.sha256(repr((spec.labels, spec.preprocessing)).encode()).hexdigest()[:12]
    return f"{spec.name}:{spec.fingerprint}:{served}"


def available_specs() -> dict[str, ModelSpec]:
    """The zoo, then the models this session uploaded."""
    return {**ZOO, **st.session_state.get("custom_specs", {})}


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


def ensure_converted(spec: ModelSpec, variants: Sequence[Variant]) -> None:
    """Convert the variants that are not cached yet, showing progress while it runs."""
    missing = [
        v for v in variants if v.is_tflite and not spec.is_tflite_file and not is_converted(spec, v)
    ]
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


def get_runners(spec: ModelSpec, variants: Sequence[Variant]) -> dict[Variant, Runner]:
    """Runners for ``variants``, converting first if needed. Errors are shown, not raised."""
    runners: dict[Variant, Runner] = {}
    try:
        ensure_converted(spec, variants)
    except InferenceError as exc:
        st.error(str(exc), icon=":material/warning:")
        return runners
    for variant in variants:
        try:
            with st.spinner(f"Loading {spec.title} ({variant.value})…"):
                runners[variant] = cached_runner(model_key(spec), variant.value, spec)
        except InferenceError as exc:
            st.error(str(exc), icon=":material/warning:")
        except Exception:
            log.exception("loading %s %s failed", spec.name, variant.value)
            st.error(f"{spec.title} ({variant.value}) could not be loaded; see the server log.")
    return runners


@dataclass(frozen=True)
class ImageInput:
    """One image the person gave, as bytes with a display name."""

    name: str
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]


def _results() -> OrderedDict[tuple[str, ...], Prediction]:
    return st.session_state.setdefault("results", OrderedDict())


def decoded(image: ImageInput, spec: ModelSpec) -> tuple[Image.Image, float]:
    """Decode (timed) at the model's draft size; raises InputError for bad files."""
    start = time.perf_counter()
    pre = spec.preprocessing
    picture = decode_image(
        image.data, name=image.name, color_mode=pre.color_mode, min_size=draft_size(pre)
    )
    return picture, (time.perf_counter() - start) * 1e3


def predictions(
    image: ImageInput, spec: ModelSpec, runners: dict[Variant, Runner], *, remeasure: bool = False
) -> dict[Variant, Prediction]:
    """Each variant's result for ``image``: from this session's store, or computed now.

    Raises:
        InputError: The image cannot be decoded.
    """
    store = _results()
    keys = {v: (image.digest, model_key(spec), v.value) for v in runners}
    todo = [v for v, key in keys.items() if remeasure or key not in store]
    if todo:
        picture, decode_ms = decoded(image, spec)
        for variant in todo:
            runner = runners[variant]
            # One untimed call first, as benchmark tools discard warm-up runs: inside a
            # Streamlit run, TensorFlow's first tf.function call costs 300-500 ms more
            # (measured here, TF 2.21; not reproduced outside Streamlit).
            runner.predict(preprocess(picture, spec.preprocessing))
            store[keys[variant]] = classify_decoded(
                runner, picture, name=image.name, k=RESULT_TOP_K, decode_ms=decode_ms
            )
    for key in keys.values():
        store.move_to_end(key)
    while len(store) > MAX_RESULTS_PER_SESSION:
        store.popitem(last=False)
    return {v: store[key] for v, key in keys.items()}


def repeat_timings(
    image: ImageInput, spec: ModelSpec, variant: Variant, runner: Runner, runs: int
) -> list[float]:
    """Inference milliseconds of ``runs`` repeated calls, kept per session like results."""
    timings: dict[tuple[str, ...], list[float]] = st.session_state.setdefault("timings", {})
    key = (image.digest, model_key(spec), variant.value, str(runs))
    if key not in timings:
        picture, _ = decoded(image, spec)
        batch = preprocess(picture, spec.preprocessing)
        runner.predict(batch)  # warm-up, not timed (see predictions)
        measured = []
        for _ in range(runs):
            start = time.perf_counter()
            runner.predict(batch)
            measured.append((time.perf_counter() - start) * 1e3)
        if len(timings) >= MAX_RESULTS_PER_SESSION:
            timings.pop(next(iter(timings)))
        timings[key] = measured
    return timings[key]


def shown_predictions(
    image: ImageInput, spec: ModelSpec, runners: dict[Variant, Runner], *, remeasure: bool = False
) -> dict[Variant, Prediction] | None:
    """``predictions`` with the pages' error policy; ``None`` when it failed.

    Bad input is shown as one line; a bug is logged for the operator and shown
    as one line. Either way the page goes on with the next image.
    """
    try:
        return predictions(image, spec, runners, remeasure=remeasure)
    except InputError as exc:
        st.error(str(exc), icon=":material/block:")
    except Exception:
        log.exception("%s with %s failed", image.name, spec.name)
        st.error(f"{image.name}: {spec.title} failed unexpectedly; the error was logged.")
    return None
