"""Compare: several models and variants on the same images, side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from inference import DEFAULT_MODEL
from ui import charts, tables
from ui.resources import get_runners, predict_images, repeat_timings
from ui.widgets import image_inputs, models_picker, variant_names_picker, variants_of

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

cells: list[dict[str, object]] = []
latencies: list[dict[str, object]] = []
charts_by_image: dict[str, list[tuple[str, pd.DataFrame]]] = {}
for spec in specs:
    chosen = variants_of(spec, variant_names)
    runners = get_runners(spec, chosen)
    for shown in predict_images(images, spec, runners):
        image = shown.image
        for variant, prediction in shown.results.items():
            config = f"{spec.name} · {variant.value}"
            top = prediction.top_k[0]
            cells.append(
                {
                    "image": image.name,
                    "model": spec.name,
                    "variant": variant.value,
                    "config": config,
                    "top-1": top.label,
                    "score": round(top.score, 4),
                    "inference ms": round(prediction.timing.inference, 2),
                    "cell": f"{top.label}, {prediction.timing.inference:.1f} ms",
                }
            )
            single = tables.top_k_rows({variant: prediction}, top_k)
            charts_by_image.setdefault(image.name, []).append((config, single))
            for ms in repeat_timings(shown, spec, variant, runners[variant], runs):
                latencies.append({"config": config, "variant": variant.value, "ms": ms})

if not cells:
    st.stop()

for image_name, panels in charts_by_image.items():
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
frame = pd.DataFrame(cells)
grid = frame.pivot(index="image", columns="config", values="cell")
grid = grid.loc[list(dict.fromkeys(frame["image"])), list(dict.fromkeys(frame["config"]))]
st.dataframe(grid, width="stretch", key="compare_grid")
st.download_button(
    "Download CSV",
    frame.drop(columns=["cell"]).to_csv(index=False).encode(),
    file_name="comparison.csv",
    mime="text/csv",
    key="compare_csv",
)

st.subheader(f"Inference time over {runs} runs per image")
st.altair_chart(charts.latency_spread_chart(pd.DataFrame(latencies)), width="stretch")
st.caption(
    "Box: quartiles; whiskers: min and max; number: median. Times are measured in this "
    "server process, one image at a time, with LiteRT using every core."
)
