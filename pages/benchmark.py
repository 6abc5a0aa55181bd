"""Benchmark: latency, size and memory per variant, and accuracy on a labelled set."""

from __future__ import annotations

import streamlit as st

from inference import DEFAULT_MODEL, Variant
from inference.core.machine import SIMD_MEANING, default_threads, int8_outlook, machine, simd
from inference.core.specs import SLOW_VARIANTS
from inference.engine.shards import RAY_ADDRESS_ENV, configured_ray_address
from inference.formats.corruptions import CORRUPTIONS, SEVERITIES, parse_corruptions
from ui import charts, tables
from ui.benchmark import (
    PAGE_CORRUPTIONS,
    current,
    evaluate_on,
    measure,
    robustness_on,
    run_key,
    run_line,
)
from ui.resources import show_error
from ui.widgets import model_picker, models_picker, variant_names_picker

st.title("Benchmark")
st.caption(
    "Measured like TFLite's benchmark_model: load, first run, discarded warm-up runs, then "
    "timed runs on one preprocessed photo. Figures come from this server; compare variants "
    "as ratios measured in the same run."
)

features = simd()
HAS, LACKS = ":material/check:", ":material/remove:"
st.info(f"{machine()}. {int8_outlook(features)}", icon=":material/memory:")
with st.expander("What these CPU features mean for int8"):
    st.markdown(
        "\n".join(
            f"- {HAS if name in features else LACKS} `{name}`: {meaning}"
            for name, meaning in SIMD_MEANING.items()
        )
    )

specs = models_picker("bench_models", default=[DEFAULT_MODEL])
variant_names = variant_names_picker(
    "bench_variants", specs, default=[v.value for v in Variant if v not in SLOW_VARIANTS]
)
left, right = st.columns(2)
with left:
    runs = st.slider("Timed runs", 5, 200, 30, key="bench_runs")
with right:
    threads = st.number_input(
        "LiteRT threads", 1, max(1, default_threads()), default_threads(), key="bench_threads"
    )

if st.button("Run benchmark", key="bench_run", type="primary", disabled=not specs):
    st.session_state["bench_results"] = measure(
        specs, variant_names, runs=runs, threads=int(threads)
    )

results = st.session_state.get("bench_results", [])
if results:
    table = tables.benchmark_table(results)
    st.dataframe(table, hide_index=True, width="stretch", key="bench_table")
    st.download_button(
        "Download CSV",
        table.to_csv(index=False).encode(),
        file_name="benchmark.csv",
        mime="text/csv",
        key="bench_csv",
    )
    chart_left, chart_right = st.columns([3, 2])
    with chart_left:
        st.markdown("**Latency per variant** (box: quartiles, whiskers: min-max)")
        st.altair_chart(
            charts.latency_spread_chart(tables.benchmark_samples(results)), width="stretch"
        )
    with chart_right:
        st.markdown("**Size per variant**")
        st.altair_chart(charts.size_chart(tables.variant_sizes(results)), width="stretch")

st.divider()
st.subheader("Accuracy on a labelled set")
st.caption(
    "A zip with one folder per class (folder names match labels ignoring case and "
    "punctuation), or the labelled sample a model ships with (200 Fashion-MNIST images "
    "for fashion_mnist_cnn)."
)
if configured_ray_address():
    st.info(
        f"Evaluations run on the Ray cluster this app is configured with (`{RAY_ADDRESS_ENV}`).",
        icon=":material/hub:",
    )
eval_spec = model_picker("bench_eval_model", default="fashion_mnist_cnn")
archive = st.file_uploader("Labelled zip", type=["zip"], key="bench_zip")
# What a shown result was run on: a result for another model, set or variants is not shown.
ran_on = run_key(eval_spec, archive, variant_names)
if eval_spec is not None and st.button("Evaluate", key="bench_evaluate"):
    try:
        st.session_state["bench_evaluation"] = (
            ran_on,
            evaluate_on(eval_spec, archive, variant_names),
        )
    except Exception as exc:
        show_error(exc, f"evaluating {eval_spec.title}")

report = current(st.session_state.get("bench_evaluation"), ran_on)
if report is not None:
    for problem in report.problems:
        st.warning(problem, icon=":material/warning:")
    st.markdown(f"**{report.model}** on {report.images} images, {len(report.classes)} classes")
    st.caption(run_line(report))
    st.dataframe(
        tables.evaluation_table(report), hide_index=True, width="stretch", key="bench_eval_table"
    )
    st.markdown("**Latency vs accuracy** (up and left is better)")
    st.altair_chart(charts.pareto_chart(tables.pareto_points(report, results)), width="stretch")
    scored = tables.scored_variants(report)
    variant = st.selectbox("Confusion matrix of", list(scored), key="bench_confusion_variant")
    st.altair_chart(
        charts.confusion_chart(tables.confusion_table(report, scored[variant])),
        width="content",
    )
    st.markdown(
        "**How sure it should be**: the reliability diagram (on the diagonal, a variant is "
        "as often right as it is sure; ECE in the table above) and how often each variant's "
        f"top-1 differs from {report.reference.value}'s, by {report.reference.value}'s confidence "
        "(columns: confidence bucket and its images)"
    )
    sure_left, sure_right = st.columns([3, 2])
    sure_left.altair_chart(
        charts.reliability_chart(tables.reliability_points(report)), width="stretch"
    )
    sure_right.dataframe(
        tables.flip_rates(report), hide_index=True, width="stretch", key="bench_flip_rates"
    )
    quantized = [n for n, v in scored.items() if v != report.reference]
    if quantized:
        st.markdown(
            f"**The images it forgets**: where a variant's top-1 differs from "
            f"{report.reference.value}'s, surest {report.reference.value} answer first"
        )
        picked = st.selectbox("Variant", quantized, key="bench_forgotten_variant")
        forgotten = report.forgotten(scored[picked])
        if not forgotten:
            st.caption(f"{picked} gives {report.reference.value}'s top-1 on every image.")
        columns = st.columns(6)
        for i, item in enumerate(forgotten):
            with columns[i % 6]:
                if item["source"] is not None:
                    st.image(item["source"], width="stretch")
                st.caption(
                    f"**{item['name']}** (truth: {item['truth']}). {report.reference.value}: "
                    f"{item['reference']} {item['reference_confidence']:.0%}; {picked}: "
                    f"{item['variant']} {item['variant_confidence']:.0%}"
                )
    with st.expander("Per-class accuracy"):
        st.dataframe(tables.per_class_table(report), hide_index=True, width="stretch")

st.divider()
st.subheader("What breaks it first")
st.caption(
    "The same labelled set (the zip above, or the model's sample) under natural corruptions "
    "in the style of ImageNet-C, each at severities 1-5, applied to the picture as the model "
    "sees it: accuracy per variant, and the mean corruption error (mCE: summed error over "
    "the severities relative to the baseline's (fp32 when it runs), averaged over "
    "corruptions; above 1, less robust)."
)
if eval_spec is not None:
    pick_left, pick_right = st.columns([3, 1])
    corruptions = pick_left.multiselect(
        "Corruptions", CORRUPTIONS, default=PAGE_CORRUPTIONS, key="bench_corruptions"
    )
    severities = pick_right.multiselect(
        "Severities", SEVERITIES, default=[1, 3, 5], key="bench_severities"
    )
    if st.button(
        "Run robustness",
        key="bench_robustness",
        disabled=not corruptions or not severities,
        help="Runs the set once clean and once per corruption and severity.",
    ):
        try:
            st.session_state["bench_robustness_report"] = (
                ran_on,
                robustness_on(
                    eval_spec, archive, variant_names, parse_corruptions(corruptions, severities)
                ),
            )
        except Exception as exc:
            show_error(exc, f"corrupting {eval_spec.title}'s set")

robust = current(st.session_state.get("bench_robustness_report"), ran_on)
if robust is not None:
    images = robust.records[0].images if robust.records else 0
    st.markdown(
        f"**{robust.model}** on {images} images: accuracy against severity, one line per "
        f"variant (0 = clean); mCE relative to {robust.baseline}"
    )
    st.caption(f"{robust.engine[:1].upper()}{robust.engine[1:]}, {robust.seconds:.1f} s")
    st.altair_chart(charts.robustness_chart(tables.robustness_points(robust)), width="content")
    st.dataframe(
        tables.mce_table(robust),
        hide_index=True,
        width="stretch",
        key="bench_mce",
        column_config={"mCE": st.column_config.NumberColumn(format="%.3f")},
    )
    st.download_button(
        "Download records (CSV)",
        tables.robustness_records(robust).to_csv(index=False).encode(),
        file_name=f"{robust.model}-robustness.csv",
        mime="text/csv",
        key="bench_robustness_csv",
    )
