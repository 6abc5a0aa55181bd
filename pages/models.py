"""Models: the zoo, conversion status and downloads, and uploading your own model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from inference import Variant, is_available
from inference.core.specs import NORMALIZE_HELP
from inference.engine.convert import (
    QUOTA_ENV,
    cache_quota,
    cache_usage,
    conversion_record,
    ensure_variants,
    is_converted,
    variant_path,
)
from inference.formats.recipes import parse_recipe, variant_recipe
from inference.formats.tflite_file import op_types
from inference.registry.user_models import CUSTOM_SUFFIXES, store_upload
from ui.resources import (
    available_specs,
    ensure_converted,
    keep_session_variant,
    session_dir,
    session_variant,
    show_error,
    visitor,
)
from ui.widgets import memory_readout, model_label

MODEL_TYPES = [suffix.lstrip(".") for suffix in CUSTOM_SUFFIXES]
COMMON_OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN", "SOFTMAX"]
"""Offered before the float file exists to read the model's own op types from."""
OUTPUT_CHOICES = {
    "auto": "read from the model (a final softmax means probabilities)",
    "probabilities": "probabilities (the model ends in a softmax)",
    "logits": "logits (the app applies a softmax)",
}

st.title("Models")
memory_readout()

specs = available_specs()
rows = []
for spec in specs.values():
    row: dict[str, object] = {
        "model": spec.name,
        "title": spec.title,
        "source": spec.source.value,
        "input": "×".join(map(str, spec.input_size)),
        "classes": spec.num_classes,
        "offline": is_available(spec),
    }
    for variant in Variant:
        if variant not in spec.variants:
            row[variant.value] = "—"
        elif variant is Variant.ORIGINAL:
            row[variant.value] = "Keras"
        elif spec.is_tflite_file and variant is spec.variants[0]:
            row[variant.value] = "your file"
        elif is_converted(spec, variant):
            row[variant.value] = f"{variant_path(spec, variant).stat().st_size / 1e6:.1f} MB"
        else:
            row[variant.value] = "not converted"
    row["recipe variants"] = ", ".join(v.value for v in spec.recipe_variants) or "—"
    rows.append(row)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="models_table")
used, evictable = cache_usage()
quota = cache_quota()
st.caption(
    "Offline: usable without a network now. Download models fetch ImageNet weights from "
    f"the internet on first use. Converted files are cached on disk for every session: "
    f"{used / 1e6:,.0f} MB now"
    + (
        f" of a {quota / 1e6:,.0f} MB quota; {evictable} file(s) of uploaded models and custom "
        "recipes may be evicted, least recently used first (the zoo's built-in variants never)."
        if quota
        else f" (no quota: set {QUOTA_ENV} to bound it)."
    )
)

st.subheader("Convert and download")
names = list(specs)
name = st.selectbox(
    "Model",
    names,
    format_func=lambda n: model_label(specs[n]),
    key="models_model",
)
spec = specs[name]
own_file = spec.variants[0] if spec.is_tflite_file else None
convertible = [v for v in spec.variants if v.is_tflite and v is not own_file]
missing = [v for v in convertible if not is_converted(spec, v)]
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

downloads = [v for v in convertible if is_converted(spec, v)]
if downloads:
    st.caption(
        "Each variant's file, and the ai-edge-quantizer recipe that made it from the fp32 file "
        "(edit it and bring it back with `python -m inference quantize --recipe FILE`). Every "
        "file carries its labels and input scaling as TFLite metadata, which MediaPipe's "
        "ImageClassifier and this app read back."
    )
for variant in downloads:
    path = variant_path(spec, variant)
    record = conversion_record(path)
    name_cell, file_cell, recipe_cell = st.columns([2, 2, 2])
    seconds = record.get("seconds")
    made = f" · made in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
    name_cell.markdown(f"**{variant.value}** · {path.stat().st_size / 1e6:.2f} MB{made}")
    file_cell.download_button(
        f"{variant.value}.tflite",
        path.read_bytes,  # deferred: read when clicked, not on every rerun
        file_name=f"{spec.name}-{variant.value}.tflite",
        mime="application/octet-stream",
        key=f"models_download_{variant.value}",
    )
    if "recipe" in record:
        recipe_cell.download_button(
            f"{variant.value} recipe .json",
            json.dumps(record["recipe"], indent=2) + "\n",
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
    float_ready = is_converted(spec, Variant.FP32)
    with st.form("models_recipe_form"):
        bases = [v.value for v in spec.variants if v.is_quantized]
        base = st.selectbox(
            "Start from",
            bases,
            index=bases.index(Variant.INT8.value) if Variant.INT8.value in bases else 0,
            key="models_recipe_base",
        )
        recipe_file = st.file_uploader(
            "…or upload a recipe (.json)",
            type=["json"],
            key="models_recipe_upload",
            max_upload_size=1,
        )
        keep_ops = st.multiselect(
            "Keep these op types in float",
            op_types(variant_path(spec, Variant.FP32)) if float_ready else COMMON_OPS,
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
            recipe = (
                parse_recipe(recipe_file.getvalue(), name=Path(recipe_file.name).stem)
                if recipe_file is not None
                else variant_recipe(spec.variant(base))
            )
            regexes = tuple(line.strip() for line in keep_tensors.splitlines() if line.strip())
            recipe = recipe.keeping_float(regexes, tuple(keep_ops))
            offering, variant = session_variant(spec, recipe)
            with st.status(f"Quantizing {spec.title} as {variant.value}…") as box:
                bar = st.progress(0.0)
                path = ensure_variants(
                    offering, [variant], progress=lambda text, done: bar.progress(done, text=text)
                )[variant]
                box.update(label=f"Built {path.name}", state="complete")
        except Exception as exc:
            show_error(exc, f"quantizing {spec.title}")
        else:
            keep_session_variant(spec, variant)
            st.session_state["models_made"] = (spec.title, variant.value, path)
            st.rerun()  # the table above and the pickers list the new variant
    if "models_made" in st.session_state:
        title, name, path = st.session_state["models_made"]
        st.success(
            f"{title} · {name}: {path.stat().st_size / 1e6:.2f} MB. It is listed with the "
            f"model's variants on Classify, Compare, Layers and Benchmark for this session.",
            icon=":material/check_circle:",
        )
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
            json.dumps(conversion_record(path).get("recipe", []), indent=2) + "\n",
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
        ["auto", *NORMALIZE_HELP],
        format_func=lambda m: (
            "auto: from the .tflite's metadata, else raw (0-255)"
            if m == "auto"
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
            new = store_upload(
                session_dir(),
                model_file.name,
                model_file.getvalue(),
                labels_file.getvalue() if labels_file is not None else None,
                normalize=None if normalize == "auto" else normalize,
                outputs=None if outputs == "auto" else outputs,
            )
    except Exception as exc:
        show_error(exc, f"checking {model_file.name}")
    else:
        visitor().add_model(new)
        st.success(
            f"Added {new.title}: input {new.input_size[0]}×{new.input_size[1]}, "
            f"{new.num_classes} classes ({new.outputs}), input scaling "
            f"{new.preprocessing.normalize}, variants "
            f"{', '.join(v.value for v in new.variants)}. Pick it on the Classify or Compare page.",
            icon=":material/check_circle:",
        )
