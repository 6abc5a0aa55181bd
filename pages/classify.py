"""Classify: pick a model, give images, see every variant's answer side by side."""

from __future__ import annotations

import streamlit as st

from inference import Variant, prepare_image
from inference.core.specs import SLOW_VARIANTS
from inference.registry.background_conversions import CONVERSIONS
from ui import charts, tables
from ui.browser import browser_panel
from ui.resources import get_runners, pending_conversion, predict_images, show_error, unconverted
from ui.saliency import METHODS, saliency_section
from ui.widgets import image_inputs, model_picker, variants_picker

st.title("Classify")
st.caption(
    "Pick a model, then give it images: each one runs through every variant you choose, "
    "so you see what quantization changes."
)

spec = model_picker("classify_model", default=st.session_state.get("last_model"))
variants = variants_picker(
    "classify_variants",
    spec.variants if spec else list(Variant),
    default=[v for v in (spec.variants if spec else Variant) if v not in SLOW_VARIANTS],
    disabled=spec is None,
)
images = image_inputs("classify", disabled=spec is None)

if spec is None:
    st.info(
        "Choose a model first; the image inputs open once a model is picked.",
        icon=":material/arrow_upward:",
    )
    st.stop()
st.session_state["last_model"] = spec.name
if not variants:
    st.info("Choose at least one variant.")
    st.stop()
if not images:
    st.info(
        f"Upload an image, take a photo, or pick a sample to classify with {spec.title}.",
        icon=":material/image:",
    )
    st.stop()

top_k = st.slider("Classes to show", 1, 10, 5, key="classify_top_k")
look_left, look_right = st.columns([1, 2])
show_saliency = look_left.toggle(
    "Where each variant looks",
    key="classify_saliency",
    help="A saliency map per variant, computed on the deployed file itself by hiding parts "
    "of the image and measuring what the answer loses.",
)
method = look_right.selectbox(
    "Saliency method",
    list(METHODS),
    format_func=METHODS.get,
    key="classify_saliency_method",
    disabled=not show_saliency,
    label_visibility="collapsed",
)
remeasure = st.button(
    "Measure again",
    key="classify_remeasure",
    help="Results are kept per image, model and variant; this re-times them now.",
)

# Variants whose file is missing convert in the background; the rest answer now, and
# each pending one appears as soon as its file is ready.
pending = unconverted(spec, variants)
if pending:
    job = CONVERSIONS.start(spec, pending)
    if job.error is not None:
        # Kept until asked: a failed conversion is never started again by a rerun.
        show_error(job.error, f"converting {spec.title}")
        st.button(
            "Try again",
            key="classify_retry",
            icon=":material/refresh:",
            help="Start the conversion of these variants again.",
            on_click=CONVERSIONS.retry,
            args=(spec, pending),
        )
    else:
        pending_conversion(spec, job, pending)
runners = get_runners(spec, [v for v in variants if v not in pending])
if not runners:
    st.stop()
sizes = {variant: runner.size_bytes for variant, runner in runners.items()}

summary = []
all_shown = []
for shown in predict_images(images, spec, runners, remeasure=remeasure):
    all_shown.append(shown)
    st.divider()
    image, picture, results = shown.image, shown.picture, shown.results
    summary.extend(results.values())
    best = tables.reference_top(results)
    st.subheader(f"{image.name}: {best.label} ({best.score:.1%})")

    left, right = st.columns([1, 2], gap="large")
    with left:
        st.image(
            prepare_image(picture, spec.preprocessing),
            caption=f"As the model sees it ({spec.preprocessing.describe()}); "
            f"original {picture.width}×{picture.height}",
            width="stretch",
        )
    with right:
        st.altair_chart(charts.top_k_chart(tables.top_k_rows(results, top_k)), width="stretch")

    table = tables.variant_table(results, sizes, spec.labels)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "score": st.column_config.NumberColumn(format="percent"),
            "largest Δp": st.column_config.NumberColumn(format="%.4f"),
            "inference ms": st.column_config.NumberColumn(format="%.2f"),
            "total ms": st.column_config.NumberColumn(format="%.2f"),
            "size MB": st.column_config.NumberColumn(format="%.2f"),
        },
        key=f"classify_table_{image.digest}",
    )
    if show_saliency:
        saliency_section(spec, runners, tables.reference_variant(list(runners)), image.digest,
                         picture, method)  # fmt: skip
    with st.expander("Timing per stage"):
        st.altair_chart(charts.stage_timing_chart(tables.stage_rows(results)), width="stretch")

if len(images) > 1 and summary:
    st.divider()
    st.subheader("All images")
    frame = tables.results_table(summary)
    st.dataframe(frame, hide_index=True, width="stretch", key="classify_summary")
    st.download_button(
        "Download CSV",
        frame.to_csv(index=False).encode(),
        file_name=f"{spec.name}-results.csv",
        mime="text/csv",
        key="classify_csv",
    )

if not pending:
    browser_panel(spec, all_shown, list(runners))
