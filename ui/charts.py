"""Altair charts used by the pages. Each takes a tidy DataFrame and returns a chart."""

from __future__ import annotations

import altair as alt
import pandas as pd

from inference import Variant

VARIANT_ORDER = [v.value for v in Variant]
STAGE_ORDER = ["decode", "preprocess", "inference"]


def top_k_chart(rows: pd.DataFrame) -> alt.LayerChart:
    """Horizontal bars of class probability, one bar per variant per class.

    Args:
        rows: Columns ``label``, ``probability`` (0-1) and ``variant``.
    """
    variants = [v for v in VARIANT_ORDER if v in set(rows["variant"])] or sorted(
        set(rows["variant"])
    )
    order = rows.groupby("label")["probability"].max().sort_values(ascending=False).index.tolist()
    base = alt.Chart(rows).encode(
        y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=220)),
        x=alt.X(
            "probability:Q",
            title="probability",
            scale=alt.Scale(domain=[0, 1]),
            axis=alt.Axis(format="%"),
        ),
        yOffset=alt.YOffset("variant:N", sort=variants),
        color=alt.Color(
            "variant:N",
            sort=variants,
            legend=alt.Legend(orient="bottom") if len(variants) > 1 else None,
        ),
        tooltip=[
            "label:N",
            "variant:N",
            alt.Tooltip("probability:Q", format=".2%"),
        ],
    )
    bars = base.mark_bar()
    text = base.mark_text(align="left", dx=3, fontSize=11).encode(
        text=alt.Text("probability:Q", format=".1%"), color=alt.value("#333")
    )
    # Sized per bar, so the legend and axes come on top of a readable plot.
    return (bars + text).properties(height=alt.Step(16, **{"for": "offset"}))


def stage_timing_chart(rows: pd.DataFrame) -> alt.Chart:
    """Stacked milliseconds per stage for each variant.

    Args:
        rows: Columns ``variant``, ``stage`` and ``ms``.
    """
    variants = [v for v in VARIANT_ORDER if v in set(rows["variant"])]
    return (
        alt.Chart(rows)
        .mark_bar()
        .encode(
            y=alt.Y("variant:N", sort=variants, title=None),
            x=alt.X("ms:Q", title="milliseconds", stack="zero"),
            color=alt.Color("stage:N", sort=STAGE_ORDER, legend=alt.Legend(orient="bottom")),
            order=alt.Order("stage_order:Q"),
            tooltip=["variant:N", "stage:N", alt.Tooltip("ms:Q", format=".2f")],
        )
        .transform_calculate(
            stage_order="indexof(['decode', 'preprocess', 'inference'], datum.stage)"
        )
        .properties(height=alt.Step(28))
    )


def latency_spread_chart(rows: pd.DataFrame) -> alt.LayerChart:
    """Inference time per configuration: min-max whiskers, quartile box, median written out.

    Args:
        rows: Columns ``config`` (model · variant) and ``ms``, one row per timed run.
    """
    configs = list(dict.fromkeys(rows["config"]))
    y = alt.Y("config:N", sort=configs, title=None, axis=alt.Axis(labelLimit=260))
    box = (
        alt.Chart(rows)
        .mark_boxplot(extent="min-max", size=14)
        .encode(
            y=y,
            x=alt.X("ms:Q", title="inference, milliseconds"),
            color=alt.Color("variant:N", sort=VARIANT_ORDER, legend=alt.Legend(orient="bottom")),
        )
    )
    median = (
        alt.Chart(rows)
        .transform_aggregate(median="median(ms)", slowest="max(ms)", groupby=["config"])
        .transform_calculate(note="'median ' + format(datum.median, '.1f') + ' ms'")
        .mark_text(align="left", dx=6, fontSize=11)
        .encode(y=y, x="slowest:Q", text="note:N")
    )
    return (box + median).properties(height=alt.Step(30))


def size_chart(rows: pd.DataFrame) -> alt.LayerChart:
    """Model size per variant in megabytes.

    Args:
        rows: Columns ``variant`` and ``MB``.
    """
    variants = [v for v in VARIANT_ORDER if v in set(rows["variant"])]
    base = alt.Chart(rows).encode(
        y=alt.Y("variant:N", sort=variants, title=None),
        x=alt.X("MB:Q", title="size, MB"),
    )
    bars = base.mark_bar().encode(color=alt.Color("variant:N", sort=VARIANT_ORDER, legend=None))
    text = base.mark_text(align="left", dx=3).encode(text=alt.Text("MB:Q", format=".1f"))
    return (bars + text).properties(height=alt.Step(26))


def pareto_chart(rows: pd.DataFrame) -> alt.LayerChart:
    """Accuracy against latency, one point per model × variant: up and left is better.

    Args:
        rows: Columns ``config``, ``variant``, ``median ms`` and ``accuracy`` (0-1).
    """
    base = alt.Chart(rows).encode(
        x=alt.X("median ms:Q", title="median inference, milliseconds", scale=alt.Scale(zero=True)),
        y=alt.Y(
            "accuracy:Q",
            title="top-1 accuracy",
            axis=alt.Axis(format="%"),
            scale=alt.Scale(zero=False),
        ),
        tooltip=[
            "config:N",
            alt.Tooltip("median ms:Q", format=".2f"),
            alt.Tooltip("accuracy:Q", format=".2%"),
        ],
    )
    points = base.mark_point(size=90, filled=True).encode(
        color=alt.Color("variant:N", sort=VARIANT_ORDER, legend=alt.Legend(orient="bottom"))
    )
    text = base.mark_text(align="left", dx=8, dy=-8, fontSize=11).encode(text="variant:N")
    return (points + text).properties(height=320)


def confusion_chart(rows: pd.DataFrame) -> alt.LayerChart:
    """Confusion matrix heatmap with counts.

    Args:
        rows: Columns ``true``, ``predicted`` and ``count`` (long form).
    """
    true_order = list(dict.fromkeys(rows["true"]))
    predicted_order = list(dict.fromkeys(rows["predicted"]))
    base = (
        alt.Chart(rows)
        .transform_joinaggregate(most="max(count)")
        .encode(
            x=alt.X(
                "predicted:N",
                sort=predicted_order,
                title="predicted",
                axis=alt.Axis(labelAngle=-40, labelLimit=140),
            ),
            y=alt.Y("true:N", sort=true_order, title="true class", axis=alt.Axis(labelLimit=160)),
        )
    )
    cells = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=["true:N", "predicted:N", "count:Q"],
    )
    text = base.mark_text(fontSize=11).encode(
        text=alt.condition("datum.count > 0", "count:Q", alt.value("")),
        color=alt.condition("datum.count > datum.most / 2", alt.value("white"), alt.value("#333")),
    )
    return (cells + text).properties(height=alt.Step(28), width=alt.Step(56))


KIND_COLOURS = alt.Scale(
    domain=["in the model (carried)", "op alone (own error)", "own error at the output"],
    range=["#9aa5b1", "#d62728", "#ff9f1c"],
)


PICK = "picked_op"
"""The damage chart's point selection: the clicked op's ``tensor``."""


def damage_chart(
    rows: pd.DataFrame, threshold_db: float, start: int | None, worst: int | None
) -> alt.LayerChart:
    """Where error is made and where it is carried: SNR per op along the network's depth.

    Args:
        rows: Long format: ``index``, ``op``, ``tensor``, ``kind`` (one of
            :data:`KIND_COLOURS`' domain), ``snr_db``.
        threshold_db: Drawn as a horizontal rule.
        start: Execution index of the op where damage starts (a vertical rule).
        worst: Execution index of the most damaging op (ringed).
    """
    tooltip = [
        alt.Tooltip("index:Q", title="#"),
        "op:N",
        "kind:N",
        alt.Tooltip("snr_db:Q", title="SNR dB", format=".1f"),
        "tensor:N",
    ]
    base = alt.Chart(rows).encode(
        x=alt.X("index:Q", title="execution order (op index)"),
        y=alt.Y("snr_db:Q", title="SNR (dB)"),
        color=alt.Color(
            "kind:N", scale=KIND_COLOURS, title=None, legend=alt.Legend(orient="bottom")
        ),
    )
    carried = base.transform_filter(alt.datum.kind == "in the model (carried)")
    layers: list[alt.Chart] = [
        carried.mark_line(strokeWidth=1.5),
        base.mark_point(filled=True, size=50, opacity=0.9)
        .encode(shape=alt.Shape("kind:N", legend=None), tooltip=tooltip)
        # A click picks the op (the page finds it on the graph).
        .add_params(alt.selection_point(name=PICK, fields=["tensor"], on="click")),
        alt.Chart(pd.DataFrame({"snr_db": [threshold_db]}))
        .mark_rule(color="#d62728", strokeDash=[4, 4])
        .encode(y="snr_db:Q"),
    ]
    if start is not None:
        marker = alt.Chart(
            pd.DataFrame({"index": [start], "label": [f"damage starts (#{start})"]})
        ).encode(x="index:Q")
        layers += [
            marker.mark_rule(color="#d62728"),
            marker.mark_text(align="left", dx=4, dy=-6, color="#d62728", y=0).encode(
                text="label:N"
            ),
        ]
    if worst is not None:
        ring = rows[(rows["index"] == worst) & (rows["kind"] == "op alone (own error)")]
        layers.append(
            alt.Chart(ring)
            .mark_point(size=400, color="#d62728", strokeWidth=2)
            .encode(x="index:Q", y="snr_db:Q")
        )
    return alt.layer(*layers).properties(height=380)


def scan_chart(rows: pd.DataFrame, n: int = 20) -> alt.Chart:
    """The scan's most sensitive ops: output SNR with only that op quantized, lowest first.

    Args:
        rows: ``rank``, ``op label``, ``output_snr_db``, ``agreement`` (the scan's table).
        n: How many to show.
    """
    top = rows.nsmallest(n, "rank")
    return (
        alt.Chart(top)
        .mark_bar()
        .encode(
            y=alt.Y(
                "op label:N",
                sort=list(top["op label"]),
                title=None,
                axis=alt.Axis(labelLimit=260),
            ),
            x=alt.X("output_snr_db:Q", title="output SNR with only this op quantized (dB)"),
            color=alt.Color(
                "agreement:Q",
                title="top-1 agreement",
                scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1]),
            ),
            tooltip=[
                "rank:Q",
                "op label:N",
                "tensor:N",
                alt.Tooltip("output_snr_db:Q", format=".1f"),
                alt.Tooltip("agreement:Q", format=".0%"),
            ],
        )
        .properties(height=max(160, 18 * len(top)))
    )


def clipped_chart(rows: pd.DataFrame) -> alt.Chart:
    """Share of each tensor's reference values outside the candidate's quantized range."""
    return (
        alt.Chart(rows.dropna(subset=["clipped"]))
        .mark_bar()
        .encode(
            x=alt.X("index:Q", title="execution order (op index)"),
            y=alt.Y("clipped:Q", title="clipped", axis=alt.Axis(format="%")),
            color=alt.Color("op:N", legend=None),
            tooltip=["index:Q", "tensor:N", "op:N", alt.Tooltip("clipped:Q", format=".3%")],
        )
        .properties(height=160)
    )


def search_chart(rows: pd.DataFrame, float_accuracy: float, budget: float) -> alt.LayerChart:
    """Each search step on latency against accuracy; point size is the file size.

    Args:
        rows: ``step``, ``kept float``, ``median ms``, ``accuracy``, ``size MB``, ``chosen``.
        float_accuracy: The float model's accuracy (a solid rule).
        budget: Largest accepted drop in points (a dashed rule at float - budget).
    """
    tooltip = [
        "step:Q",
        "kept float:Q",
        "median ms:Q",
        alt.Tooltip("accuracy:Q", format=".2%"),
        "size MB:Q",
    ]
    colours = alt.Scale(domain=[False, True], range=["#4c78a8", "#2ca02c"])
    points = (
        alt.Chart(rows)
        .mark_circle(opacity=0.8)
        .encode(
            x=alt.X("median ms:Q", title="median latency (ms)"),
            y=alt.Y("accuracy:Q", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)),
            size=alt.Size("size MB:Q", title="size MB"),
            color=alt.Color("chosen:N", title="chosen", scale=colours),
            tooltip=tooltip,
        )
    )
    labels = points.mark_text(dy=-12, fontSize=11, color="#333").encode(
        text="kept float:Q", size=alt.value(11)
    )
    lines = pd.DataFrame(
        {"accuracy": [float_accuracy, float_accuracy - budget / 100], "line": ["float", "budget"]}
    )
    rules = (
        alt.Chart(lines)
        .mark_rule()
        .encode(
            y="accuracy:Q",
            strokeDash=alt.StrokeDash("line:N", title=None),
            color=alt.value("#888"),
        )
    )
    return alt.layer(rules, points, labels).properties(height=300)


def reliability_chart(points: pd.DataFrame) -> alt.LayerChart:
    """Accuracy against confidence per bin, one line per variant; the diagonal is calibrated."""
    diagonal = (
        alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(color="#999", strokeDash=[4, 4])
        .encode(x="x:Q", y="y:Q")
    )
    lines = (
        alt.Chart(points)
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "confidence:Q", title="top-1 confidence (bin mean)", scale=alt.Scale(domain=[0, 1])
            ),
            y=alt.Y("accuracy:Q", title="accuracy in the bin", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("variant:N", title=None, sort=VARIANT_ORDER),  # as every chart
            tooltip=[
                "variant:N",
                "images:Q",
                alt.Tooltip("confidence:Q", format=".3f"),
                alt.Tooltip("accuracy:Q", format=".3f"),
            ],
        )
    )
    return alt.layer(diagonal, lines).properties(height=320)


def robustness_chart(points: pd.DataFrame, columns: int = 4) -> alt.FacetChart:
    """Accuracy against severity (0: clean), one line per variant, one panel per corruption."""
    return (
        alt.Chart(points)
        .mark_line(point=True)
        .encode(
            x=alt.X("severity:O", title="severity (0 = clean)"),
            y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "variant:N", title=None, sort=VARIANT_ORDER, legend=alt.Legend(orient="top")
            ),
            tooltip=[
                "variant:N",
                "corruption:N",
                "severity:O",
                alt.Tooltip("accuracy:Q", format=".1%"),
                alt.Tooltip("agreement:Q", format=".1%", title="same top-1 as the baseline"),
                "images:Q",
            ],
        )
        .properties(width=190, height=160)
        .facet(
            # Panels in the run's order (noises, blurs, ...), not alphabetically.
            facet=alt.Facet(
                "corruption:N", title=None, sort=list(dict.fromkeys(points["corruption"]))
            ),
            columns=columns,
        )
    )
