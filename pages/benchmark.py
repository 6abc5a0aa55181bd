"""Benchmark: latency, size and memory per variant, and accuracy on a labelled set."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from inference import DEFAULT_MODEL, Variant
from inference.analysis.benchmark import run_benchmarks
from inference.analysis.evaluate import evaluate, labelled_set
from inference.core.machine import SIMD_MEANING, default_threads, int8_outlook, machine, simd
from inference.core.specs import SLOW_VARIANTS
from ui import charts
from ui.resources import get_runners, show_error
from ui.widgets import model_picker, models_picker, variant_names_picker, variants_of

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
    jobs = [(spec, v) for spec in specs for v in variants_of(spec, variant_names)]
    bar = st.progress(0.0, text="starting")
    measured = run_benchmarks(
        jobs,
        runs=runs,
        threads=int(threads),
        on_job=lambda spec, variant, done: bar.progress(
            done, text=f"{spec.title} · {variant.value}"
        ),
        on_error=lambda spec, variant, exc: show_error(exc, f"{spec.title} · {variant.value}"),
        convert_progress=lambda text, done: bar.progress(done, text=f"converting: {text}"),
    )
    for _, runner in measured:
        runner.close()
    bar.progress(1.0, text="done")
    st.session_state["bench_results"] = [result for result, _ in measured]

results = st.session_state.get("bench_results", [])
if results:
    table = pd.DataFrame([r.as_row() for r in results])
    st.dataframe(table, hide_index=True, width="stretch", key="bench_table")
    st.download_button(
        "Download CSV",
        table.to_csv(index=False).encode(),
        file_name="benchmark.csv",
        mime="text/csv",
        key="bench_csv",
    )
    samples = pd.DataFrame(
        [
            {"config": f"{r.model} · {r.variant.value}", "variant": r.variant.value, "ms": ms}
            for r in results
            for ms in r.samples_ms
        ]
    )
    chart_left, chart_right = st.columns([3, 2])
    with chart_left:
        st.markdown("**Latency per variant** (box: quartiles, whiskers: min-max)")
        st.altair_chart(charts.latency_spread_chart(samples), width="stretch")
    with chart_right:
        st.markdown("**Size per variant**")
        sizes = pd.DataFrame(
            [{"variant": r.variant.value, "MB": r.size_bytes / 1e6} for r in results]
        ).drop_duplicates("variant")
        st.altair_chart(charts.size_chart(sizes), width="stretch")

st.divider()
st.subheader("Accuracy on a labelled set")
st.caption(
    "A zip with one folder per class (folder names match labels ignoring case and "
    "punctuation), or the labelled sample a model ships with (200 Fashion-MNIST images "
    "for fashion_mnist_cnn)."
)
eval_spec = model_picker("bench_eval_model", default="fashion_mnist_cnn")
archive = st.file_uploader("Labelled zip", type=["zip"], key="bench_zip")
if eval_spec is not None and st.button("Evaluate", key="bench_evaluate"):
    try:
        dataset = labelled_set(
            eval_spec, archive.getvalue() if archive else None, archive.name if archive else ""
        )
        chosen = variants_of(eval_spec, variant_names)
        runners = get_runners(eval_spec, chosen)
        bar = st.progress(0.0, text="evaluating")
        report = evaluate(
            eval_spec, runners, dataset, progress=lambda t, f: bar.progress(min(f, 1.0), text=t)
        )
        st.session_state["bench_evaluation"] = report
    except Exception as exc:
        show_error(exc, f"evaluating {eval_spec.title}")

report = st.session_state.get("bench_evaluation")
if report is not None:
    for problem in report.problems:
        st.warning(problem, icon=":material/warning:")
    summary = pd.DataFrame([s.as_row() for s in report.scores])
    summary["agreement"] = pd.to_numeric(summary["agreement"])  # the reference row: blank
    st.markdown(f"**{report.model}** on {report.images} images, {len(report.classes)} classes")
    st.dataframe(summary, hide_index=True, width="stretch", key="bench_eval_table")
    latency = {(r.model, r.variant): r.latency.median for r in results}
    points = pd.DataFrame(
        [
            {
                "config": f"{report.model} · {s.variant.value}",
                "variant": s.variant.value,
                "median ms": latency.get((report.model, s.variant), s.median_ms),
                "accuracy": s.accuracy,
            }
            for s in report.scores
        ]
    )
    st.markdown("**Latency vs accuracy** (up and left is better)")
    st.altair_chart(charts.pareto_chart(points), width="stretch")
    scored = {s.variant.value: s.variant for s in report.scores}
    variant = st.selectbox("Confusion matrix of", list(scored), key="bench_confusion_variant")
    st.altair_chart(
        charts.confusion_chart(pd.DataFrame(report.confusion_rows(scored[variant]))),
        width="content",
    )
    with st.expander("Per-class accuracy"):
        st.dataframe(pd.DataFrame(report.per_class_rows()), hide_index=True, width="stretch")
