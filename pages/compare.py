"""Compare: several models and variants on the same images, side by side."""

from __future__ import annotations

import streamlit as st

from inference import DEFAULT_MODEL
from ui import charts, tables
from ui.compare import compare
from ui.widgets import image_inputs, models_picker, variant_names_picker

COLUMNS_PER_ROW = 4

st.title("Compare")
st.caption(
    "Models × variants on the same images: top-k side by side, one answer table (rows: "
    "images; cells: top-1 and time), and latency spread over runs."
)

specs = models_picker("compare_models", default=[DEFAULT_MODEL])
variant_names = variant_names_picker("compare_variants", specs, default=["fp32", "int8"])
runs = st.slider("Timed runs per image (for the spread)", 1, 50, 10, key="compare_runs")
images = image_inputs("compare", disabled=not specs, default_samples=("chelsea.jpg", "coffee.jpg"))

if not specs or not variant_names:
    st.info("Choose at least one model and one variant.", icon=":material/arrow_upward:")
    st.stop()
if not images:
    st.info("Upload images or pick samples to compare on.", icon=":material/image:")
    st.stop()
top_k = st.slider("Classes per chart", 1, 10, 3, key="compare_top_k")

comparison = compare(specs, variant_names, images, runs=runs, top_k=top_k)
if comparison.answers.empty:
    st.stop()

for image_name, panels in comparison.panels.items():
    st.subheader(image_name)
    for start in range(0, len(panels), COLUMNS_PER_ROW):
        columns = st.columns(min(COLUMNS_PER_ROW, len(panels)))
        for column, (config, rows) in zip(
            columns, panels[start : start + COLUMNS_PER_ROW], strict=False
        ):
            with column:
                st.markdown(f"**{config}**")
                st.altair_chart(charts.top_k_chart(rows), width="stretch")

st.subheader("Top-1 and inference time")
st.dataframe(tables.answer_grid(comparison.answers), width="stretch", key="compare_grid")
st.download_button(
    "Download CSV",
    tables.answers_csv(comparison.answers),
    file_name="comparison.csv",
    mime="text/csv",
    key="compare_csv",
)

st.subheader(f"Inference time over {runs} runs per image")
st.altair_chart(charts.latency_spread_chart(comparison.latencies), width="stretch")
st.caption(
    "Box: quartiles; whiskers: min and max; number: median. Times are measured in this "
    "server process, one image at a time, with LiteRT using every core."
)
