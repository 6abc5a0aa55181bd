"""Models: the zoo, conversion status and downloads, and uploading your own model."""

from __future__ import annotations

import streamlit as st

from inference import Variant
from inference.core.specs import NORMALIZE_HELP
from inference.engine.convert import cache_quota, cache_usage
from inference.registry.user_models import CUSTOM_SUFFIXES
from ui.models import (
    AUTO,
    added_note,
    build_session_variant,
    cache_note,
    check_upload,
    convertible_variants,
    keepable_ops,
    made_note,
    make_recipe,
    recipe_bases,
    saved_recipe,
    variant_files,
    zoo_table,
)
from ui.resources import (
    available_specs,
    ensure_converted,
    keep_session_variant,
    show_error,
    unconverted,
    visitor,
)
from ui.widgets import memory_readout, model_label

MODEL_TYPES = [suffix.lstrip(".") for suffix in CUSTOM_SUFFIXES]
OUTPUT_CHOICES = {
    AUTO: "read from the model (a final softmax means probabilities)",
    "probabilities": "probabilities (the model ends in a softmax)",
    "logits": "logits (the app applies a softmax)",
}

st.title("Models")
memory_readout()

specs = available_specs()
st.dataframe(zoo_table(specs.values()), hide_index=True, width="stretch", key="models_table")
st.caption(cache_note(*cache_usage(), cache_quota()))

st.subheader("Convert and download")
names = list(specs)
name = st.selectbox(
    "Model",
    names,
    format_func=lambda n: model_label(specs[n]),
    key="models_model",
)
spec = specs[name]
convertible = convertible_variants(spec)
missing = unconverted(spec, convertible)
if missing:
    if st.button(
        f"Convert {', '.join(v.value for v in missing)}",
        key="models_convert",
        type="primary",
    ):
        try:
            ensure_converted(spec, missing)
        except Exception as exc:
            show_error(exc, f"converting {spec.title}")
        else:
            st.rerun()
elif convertible:
    st.success(
        "Every TFLite variant of this model is converted and cached.",
        icon=":material/check_circle:",
    )

downloads = variant_files(spec, convertible)
if downloads:
    st.caption(
        "Each variant's file, and the ai-edge-quantizer recipe that made it from the fp32 file "
        "(edit it and bring it back with `python -m inference quantize --recipe FILE`). Every "
        "file carries its labels and input scaling as TFLite metadata, which MediaPipe's "
        "ImageClassifier and this app read back."
    )
for file in downloads:
    variant = file.variant
    name_cell, file_cell, recipe_cell = st.columns([2, 2, 2])
    name_cell.markdown(file.summary)
    file_cell.download_button(
        f"{variant.value}.tflite",
        file.path.read_bytes,  # deferred: read when clicked, not on every rerun
        file_name=f"{spec.name}-{variant.value}.tflite",
        mime="application/octet-stream",
        key=f"models_download_{variant.value}",
    )
    if file.recipe is not None:
        recipe_cell.download_button(
            f"{variant.value} recipe .json",
            file.recipe,
            file_name=f"{spec.name}-{variant.value}.recipe.json",
            mime="application/json",
            key=f"models_recipe_{variant.value}",
        )
st.download_button(
    "labels.txt",
    "\n".join(spec.labels) + "\n",
    file_name=f"{spec.name}-labels.txt",
    mime="text/plain",
    key="models_download_labels",
)

st.subheader("Quantize with a recipe")
st.caption(
    "Make a variant from the fp32 file with ai-edge-quantizer: start from a built-in recipe or "
    "upload your own (its JSON format), and keep chosen op types or tensors in float. The "
    "result is listed with the model's variants on every page, for this session "
    "(`python -m inference quantize --name` saves one for every session)."
)
if Variant.FP32 not in spec.variants:
    st.info(f"{spec.title} is already quantized; it runs only as itself.")
else:
    with st.form("models_recipe_form"):
        bases, first = recipe_bases(spec)
        base = st.selectbox("Start from", bases, index=first, key="models_recipe_base")
        recipe_file = st.file_uploader(
            "…or upload a recipe (.json)",
            type=["json"],
            key="models_recipe_upload",
            max_upload_size=1,
        )
        keep_ops = st.multiselect(
            "Keep these op types in float",
            keepable_ops(spec),
            key="models_keep_ops",
        )
        keep_tensors = st.text_area(
            "Keep tensors whose name matches (one regex per line)",
            key="models_keep_tensors",
            placeholder="blocks\\.1[0-5]\\.",
        )
        build = st.form_submit_button("Build the variant", key="models_recipe_build")
    if build:
        try:
            recipe = make_recipe(spec, base, recipe_file, keep_ops, keep_tensors)
            variant, path = build_session_variant(spec, recipe)
        except Exception as exc:
            show_error(exc, f"quantizing {spec.title}")
        else:
            keep_session_variant(spec, variant)
            st.session_state["models_made"] = (spec.title, variant.value, path)
            st.rerun()  # the table above and the pickers list the new variant
    if "models_made" in st.session_state:
        title, name, path = st.session_state["models_made"]
        st.success(made_note(title, name, path), icon=":material/check_circle:")
        file_cell, recipe_cell = st.columns(2)
        file_cell.download_button(
            "variant .tflite",
            path.read_bytes,
            file_name=path.name,
            mime="application/octet-stream",
            key="models_made_file",
        )
        recipe_cell.download_button(
            "its recipe .json",
            saved_recipe(path),
            file_name=path.with_suffix(".recipe.json").name,
            mime="application/json",
            key="models_made_recipe",
        )

st.subheader("Your own model")
st.caption(
    "A Keras model (.keras or .h5, loaded with safe_mode: no Lambda layers or custom "
    "code) or a .tflite file, plus a labels file with one label per line. A .tflite with "
    "TFLite metadata (as this app's downloads and MediaPipe's models have) brings its own "
    "labels and input scaling. It stays in this session only."
)
with st.form("models_upload_form", clear_on_submit=False):
    model_file = st.file_uploader("Model file", type=MODEL_TYPES, key="models_upload_model")
    labels_file = st.file_uploader("Labels file", type=["txt"], key="models_upload_labels")
    normalize = st.selectbox(
        "Input scaling the model expects",
        [AUTO, *NORMALIZE_HELP],
        format_func=lambda m: (
            "auto: from the .tflite's metadata, else raw (0-255)"
            if m == AUTO
            else f"{m}: {NORMALIZE_HELP[m]}"
        ),
        key="models_normalize",
    )
    outputs = st.selectbox(
        "What the model outputs",
        list(OUTPUT_CHOICES),
        format_func=OUTPUT_CHOICES.get,
        key="models_outputs",
    )
    submitted = st.form_submit_button("Add model", key="models_add")

if submitted:
    if model_file is None:
        st.error("Choose a model file first (.keras, .h5 or .tflite).")
        st.stop()
    try:
        with st.spinner("Checking the model…"):
            new = check_upload(model_file, labels_file, normalize, outputs)
    except Exception as exc:
        show_error(exc, f"checking {model_file.name}")
    else:
        visitor().add_model(new)
        st.success(added_note(new), icon=":material/check_circle:")
