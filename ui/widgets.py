"""Reusable input widgets: model and variant pickers, image inputs."""

from __future__ import annotations

import time
from collections.abc import Sequence

import streamlit as st

from inference import ModelSpec, Source, is_available
from inference.core.machine import resident_bytes
from inference.core.paths import SAMPLES_DIR
from inference.core.specs import AnyVariant, Variant
from inference.formats.images import IMAGE_TYPES, MAX_IMAGE_BYTES, MAX_IMAGE_MB
from inference.registry.runner_cache import MAX_CACHED_RUNNERS, RUNNERS, memory_cap
from ui.resources import ImageInput, available_specs, distinct_images

__all__ = [
    "MAX_IMAGE_MB",
    "image_inputs",
    "memory_readout",
    "model_label",
    "model_picker",
    "models_picker",
    "variant_names_picker",
    "variants_of",
    "variants_picker",
]

_SOURCE_ORDER = {Source.BUNDLED: 0, Source.CUSTOM: 1, Source.DOWNLOAD: 2}


def model_label(spec: ModelSpec) -> str:
    """How a model reads in a picker: name, input size, and where it comes from."""
    height, width = spec.input_size
    if spec.source is Source.BUNDLED:
        origin = "offline"
    elif spec.source is Source.CUSTOM:
        origin = "your model"
    else:
        origin = "downloaded" if is_available(spec) else "download on first use"
    return f"{spec.title} · {height}×{width} · {origin}"


def ordered_specs() -> list[ModelSpec]:
    specs = available_specs().values()
    return sorted(specs, key=lambda s: _SOURCE_ORDER[s.source])


def model_picker(key: str, *, default: str | None = None) -> ModelSpec | None:
    """A model selectbox, offline models first; ``None`` until the person picks one."""
    specs = {spec.name: spec for spec in ordered_specs()}
    names = list(specs)
    name = st.selectbox(
        "Model",
        names,
        index=names.index(default) if default in names else None,
        format_func=lambda n: model_label(specs[n]),
        placeholder="Choose a model to start",
        key=key,
        help="Offline models work at once; download models fetch ImageNet weights on first use.",
    )
    return specs.get(name) if name else None


def models_picker(key: str, default: Sequence[str]) -> list[ModelSpec]:
    specs = {spec.name: spec for spec in ordered_specs()}
    names = st.multiselect(
        "Models",
        list(specs),
        default=[d for d in default if d in specs],
        format_func=lambda n: model_label(specs[n]),
        key=key,
    )
    return [specs[n] for n in names]


def variants_picker(
    key: str,
    offered: Sequence[AnyVariant],
    default: Sequence[AnyVariant],
    *,
    disabled: bool = False,
) -> list[AnyVariant]:
    chosen = st.multiselect(
        "Variants",
        [v.value for v in offered],
        default=[v.value for v in default if v in offered],
        key=key,
        disabled=disabled,
        help=(
            "original: the Keras model · fp32: TFLite float · fp16: float16 weights · "
            "dynamic: int8 weights, activations quantized on the fly · int8: int8 weights and "
            "activations · int16x8: 16-bit activations (slow on x86) · w4: 4-bit weights · "
            "others: recipes saved for this model (Models page, or the quantize command)"
        ),
    )
    by_name = {v.value: v for v in offered}
    return [by_name[v] for v in chosen if v in by_name]


def variant_names_picker(key: str, specs: Sequence[ModelSpec], default: Sequence[str]) -> list[str]:
    """Variant names for several models: the built-in ones, then each model's recipe variants."""
    names = [v.value for v in Variant]
    for spec in specs:
        names += [v.value for v in spec.recipe_variants if v.value not in names]
    return st.multiselect(
        "Variants",
        names,
        default=[d for d in default if d in names],
        key=key,
        help="Built-in variants, then recipe variants saved for the chosen models.",
    )


def variants_of(spec: ModelSpec, names: Sequence[str]) -> list[AnyVariant]:
    """The variants called ``names`` that ``spec`` offers, in the order of ``names``."""
    by_name = {v.value: v for v in spec.variants}
    return [by_name[n] for n in names if n in by_name]


def sample_names() -> list[str]:
    return sorted(p.name for p in SAMPLES_DIR.glob("*.jpg"))


def image_inputs(
    prefix: str, *, disabled: bool, default_samples: Sequence[str] = ()
) -> list[ImageInput]:
    """Uploaded files, an optional camera shot, and bundled samples, in that order."""
    uploads = st.file_uploader(
        "Upload images",
        type=IMAGE_TYPES,
        accept_multiple_files=True,
        key=f"{prefix}_upload",
        disabled=disabled,
        max_upload_size=MAX_IMAGE_MB,
        help=f"JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF, up to {MAX_IMAGE_MB} MB each.",
    )
    left, right = st.columns([3, 1])
    with left:
        samples = st.multiselect(
            "Or try bundled sample photos",
            sample_names(),
            default=[s for s in default_samples if s in sample_names()],
            key=f"{prefix}_samples",
            disabled=disabled,
        )
    with right:
        use_camera = st.toggle("Use the camera", key=f"{prefix}_camera_on", disabled=disabled)
    shot = (
        st.camera_input("Take a photo", key=f"{prefix}_camera", disabled=disabled)
        if use_camera
        else None
    )
    images = []
    for upload in uploads or []:
        # Streamlit's own limit counts MiB; ours counts MB, like the API's.
        if upload.size > MAX_IMAGE_BYTES:
            st.error(
                f"{upload.name}: {upload.size / 1e6:.0f} MB is over the {MAX_IMAGE_MB} MB "
                "limit for images",
                icon=":material/block:",
            )
            continue
        images.append(ImageInput(upload.name, upload.getvalue()))
    if shot is not None:
        images.append(ImageInput("camera.jpg", shot.getvalue()))
    images.extend(ImageInput(name, (SAMPLES_DIR / name).read_bytes()) for name in samples)
    return distinct_images(images)


def memory_readout() -> None:
    """This server's resident memory against its cap, and any runners released under pressure."""
    cap, share = memory_cap()
    rss = resident_bytes()
    st.progress(
        min(rss / cap, 1.0),
        text=f"Server memory: {rss / 1e9:.2f} GB of its {cap / 1e9:.1f} GB cap "
        f"({rss / cap:.0%}); loaded models are shared by all sessions, at most "
        f"{MAX_CACHED_RUNNERS} at a time, and the least recently used are released once "
        f"memory passes {share:.0%} of the cap.",
    )
    if RUNNERS.releases:
        last = RUNNERS.releases[-1]
        st.warning(
            f"Memory passed {last.threshold / 1e9:.2f} GB at "
            f"{time.strftime('%H:%M:%S', time.localtime(last.when))}: released "
            f"{', '.join(last.released)} ({last.resident_before / 1e9:.2f} → "
            f"{last.resident_after / 1e9:.2f} GB). They load again when next used.",
            icon=":material/memory:",
        )
