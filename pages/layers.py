"""Layers: where quantization breaks, which images flip, keep layers in float, search for a mix."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from inference import DEFAULT_MODEL, Variant
from inference.analysis.evaluate import labelled_set
from inference.analysis.layer_report import FloatSelection, model_explorer_data, short_name
from inference.analysis.own_errors import CARRIED_OPS
from inference.analysis.rebuild import OUTPUT_TOLERANCE
from inference.core.specs import SLOW_VARIANTS
from inference.engine.convert import variant_path
from ui import charts, damage
from ui.flips import (
    both_top_k,
    flip_title,
    flipped,
    flips_caption,
    flips_table,
    worst_tensors_table,
)
from ui.graph import graph_section
from ui.layers import (
    build_fixed_file,
    build_fixed_variant,
    candidate_recipe,
    image_batches,
    image_worst,
    layer_report,
    rebuilt_upload,
    run_search,
    shown_changes,
    uploaded_candidate,
    zip_batches,
)
from ui.resources import ensure_converted, get_runners, show_error
from ui.widgets import image_inputs, model_picker

FLOAT_REFERENCES = (Variant.FP32, Variant.FP16, Variant.DYNAMIC, Variant.W4)
MAX_FLIPS_DETAILED = 5
"""Flipped images shown with their top-k and worst tensors (each costs one layer report)."""


st.title("Layers")
st.caption(
    "Where in the network a quantized variant departs from its reference, which images change "
    "their answer because of it, and what keeping chosen layers in float gives back."
)

spec = model_picker("layers_model", default=st.session_state.get("last_model", DEFAULT_MODEL))
if spec is None:
    st.info("Choose a model first.", icon=":material/arrow_upward:")
    st.stop()
if Variant.FP32 not in spec.variants:
    st.info(
        f"{spec.title} is a quantized file without its float model; compare two files with "
        "`python -m inference layers IMAGE --reference FLOAT --candidate QUANTIZED`."
    )
    st.stop()

quantized = [v for v in spec.variants if v.is_quantized]
left, right = st.columns(2)
with left:
    candidate = spec.variant(
        st.selectbox(
            "Candidate",
            [v.value for v in quantized],
            index=[v.value for v in quantized].index("int8") if Variant.INT8 in quantized else 0,
            key="layers_candidate",
            help=f"{', '.join(v.value for v in SLOW_VARIANTS)} runs ~100x slower than int8 on "
            "x86. Recipe variants saved for this model are listed after the built-in ones.",
        )
    )
with right:
    # A reference is the truth every tensor is read from: float activations only.
    references = [v for v in spec.variants if v in FLOAT_REFERENCES and v != candidate]
    reference = spec.variant(
        st.selectbox(
            "Reference",
            [v.value for v in references],
            key="layers_reference",
            help="The float file by default: the truth each tensor is compared with.",
        )
    )
own_file = st.file_uploader(
    "…or compare your own quantized .tflite of this model with the reference",
    type=["tflite"],
    key="layers_candidate_file",
    help="A file made by another tool from the same graph: tensors are matched by name.",
)
images = image_inputs("layers", disabled=False, default_samples=("chelsea.jpg", "coffee.jpg"))
use_calibration = st.toggle(
    "Add the calibration set's photos",
    key="layers_calibration",
    help="The images int8 was tuned on.",
)
threshold = st.slider(
    "Damage threshold (SNR, dB)",
    0,
    60,
    20,
    key="layers_threshold",
    help="An op whose own error takes the output below this is where damage starts.",
)
if not images and not use_calibration:
    st.info("Upload images or pick samples to compare on.", icon=":material/image:")
    st.stop()

own = None
label = candidate.value
try:
    ensure_converted(spec, [reference] if own_file else [reference, candidate])
    if own_file is not None:
        own = uploaded_candidate(spec, own_file.name, own_file.getvalue())
        label = own_file.name
    batches = image_batches(spec, images, use_calibration)
    candidate_file = own.path if own is not None else variant_path(spec, candidate)
    report = layer_report(spec, variant_path(spec, reference), candidate_file, batches)
except Exception as exc:
    show_error(exc, f"comparing {spec.title} {label} with {reference.value}")
    st.stop()

rows = damage.report_rows(report)
culprit = report.most_damaging(1)[0]
start = report.damage_starts(threshold)
worst = report.worst(1)[0]
one, two, three = st.columns(3)
one.metric("Most damaging op", damage.describe_op(culprit), help=damage.damage_help(culprit))
two.metric(
    "Damage starts at",
    damage.describe_op(start) if start else "nowhere",
    help=damage.damage_help(start) if start else f"no op's own error is below {threshold} dB",
)
three.metric(
    "Lowest SNR in the model",
    f"{worst.snr_db:.1f} dB",
    help=f"{damage.describe_op(worst)}: where error shows, which is often inherited",
)
st.markdown(
    f"**Where error is made, and where it is carried** ({label} against {reference.value}, "
    f"{report.images} image(s)): grey, each op's SNR in the model with everything it inherits; "
    "red, the op alone, fed the reference's inputs; orange, the model's output with only that "
    f"op's own error in it (the {CARRIED_OPS} worst ops)."
)
chart_event = st.altair_chart(
    charts.damage_chart(
        damage.damage_rows(report), threshold, start.index if start else None, culprit.index
    ),
    width="stretch",
    on_select="rerun",
    key="layers_damage_chart",
)
chart_pick = [p["tensor"] for p in (chart_event.selection.get(charts.PICK) or []) if "tensor" in p]
if rows["clipped"].notna().any():
    st.markdown(
        "**Clipped values**: the share of the reference's values outside the candidate's "
        "quantized range; high where calibration did not cover these images"
    )
    st.altair_chart(charts.clipped_chart(rows), width="stretch")

worst_ten = [r.tensor for r in report.most_damaging(10)]
picked_on_graph = (st.session_state.get("layers_graph_frame") or {}).get("tensors", [])
worst_table, by_op = st.columns([3, 2])
with worst_table:
    st.markdown("**The 10 most damaging ops** (pick a row to find it on the graph)")
    worst_event = st.dataframe(
        damage.highlighted(damage.most_damaging_table(report), worst_ten, picked_on_graph),
        hide_index=True,
        width="stretch",
        key="layers_worst",
        on_select="rerun",
        selection_mode="single-row",
    )
with by_op:
    st.markdown("**By op type**")
    st.dataframe(damage.by_op_table(report), hide_index=True, width="stretch", key="layers_by_op")
csv_cell, explorer_cell = st.columns(2)
csv_cell.download_button(
    "Per-op report (CSV)",
    damage.report_csv(rows),
    file_name=f"{spec.name}-{label}-layers.csv",
    mime="text/csv",
    key="layers_csv",
)
explorer_cell.download_button(
    "Model Explorer node data (JSON)",
    json.dumps(model_explorer_data(report), indent=1),
    file_name=f"{spec.name}-{label}-snr.json",
    mime="application/json",
    key="layers_model_explorer",
    help="Load it over the .tflite graph in Google's Model Explorer (ai-edge-model-explorer).",
)

graph_section(
    report,
    Path(candidate_file),
    Path(variant_path(spec, reference)),
    (label, reference.value),
    # A row of the table, else a point of the chart: that op is selected on the graph.
    wanted=worst_ten[worst_event.selection.rows[0]]
    if worst_event and worst_event.selection.rows
    else (chart_pick or [None])[0],
)

st.divider()
st.subheader("Sensitivity scan")
st.caption(
    "The ground truth for the ranking above: quantize one op (or one block) at a time with "
    f"{label}'s recipe, keep the rest in float, and measure the model's output on the same "
    "images. Ranges are calibrated once; the ops are shared among parallel workers."
)
rebuilt = None
if own is not None:
    try:
        rebuilt = rebuilt_upload(spec, own, batches)
    except Exception as exc:
        show_error(exc, f"reading {label}'s quantization")
    else:
        check = rebuilt.check
        if check.same:
            st.success(
                f"{label}'s quantization, read back as a recipe and rebuilt from fp32, gives the "
                f"same {check.tensors} tensors (types and scales) and outputs within "
                f"{OUTPUT_TOLERANCE:g} on {check.images} image(s): it can be scanned and fixed.",
                icon=":material/check_circle:",
            )
        else:
            parts = [short_name(t) for t in (*check.missing, *check.differing)][:5]
            parts += [f"{short_name(t)} ({why})" for t, why in check.unexpressed][:5]
            st.warning(
                f"{label}'s quantization cannot be rebuilt exactly as a recipe (outputs differ by "
                f"up to {check.max_output_difference:.3g}); it differs at: {', '.join(parts)}.",
                icon=":material/warning:",
            )
scan_recipe = candidate_recipe(candidate, rebuilt, uploaded=own is not None)
if scan_recipe is None:
    st.info(
        f"{label} cannot be rebuilt by a recipe, so there is nothing to quantize one op at a "
        "time with.",
        icon=":material/info:",
    )
else:
    by_cell, block_cell = st.columns([1, 2])
    by = by_cell.radio(
        "Quantize", ["one op at a time", "one block at a time"], key="layers_scan_by"
    )
    block = block_cell.text_input(
        "Block: a regex whose group names the block in tensor names",
        r"blocks\.(\d+)\.",
        key="layers_scan_block",
        disabled=by == "one op at a time",
    )
    scan_key = (spec.name, own.fingerprint if own else label, batches.digest, by, block)
    if st.button("Run the scan", key="layers_scan_run"):
        try:
            scanned = damage.run_scan(
                spec,
                variant_path(spec, Variant.FP32),
                scan_recipe,
                batches.inputs,
                block=block if by == "one block at a time" else None,
            )
            st.session_state["layers_scan"] = damage.ScanShown(scan_key, scanned)
        except Exception as exc:
            show_error(exc, f"scanning {spec.title} {label}")
    shown_scan = st.session_state.get("layers_scan")
    if shown_scan is not None and shown_scan.key == scan_key:
        scan = shown_scan.scan
        table = damage.scan_rows(scan)
        st.markdown(
            f"**Most sensitive**: {damage.describe_op(scan.records[0])} "
            f"(output {scan.records[0].output_snr_db:.1f} dB with only it quantized; "
            f"{scan.images} image(s), {scan.engine}, {scan.seconds:.0f} s). "
            + (damage.agreement_line(report, scan) if by == "one op at a time" else "")
        )
        st.altair_chart(charts.scan_chart(table), width="stretch")
        st.dataframe(
            table.drop(columns=["op label"]).round(4),
            hide_index=True,
            width="stretch",
            key="layers_scan_table",
        )
        st.download_button(
            "Scan (CSV)",
            table.to_csv(index=False).encode(),
            file_name=f"{spec.name}-{label}-sensitivity.csv",
            mime="text/csv",
            key="layers_scan_csv",
        )

st.divider()
st.subheader("Images whose answer flips")
flip_zip = st.file_uploader(
    "Look for flips in a labelled zip too (one folder per class)",
    type=["zip"],
    key="layers_flip_zip",
)
ref_runner = get_runners(spec, [reference]).get(reference)
cand_runner = (
    get_runners(own, [own.variants[0]]).get(own.variants[0])
    if own is not None
    else get_runners(spec, [candidate]).get(candidate)
)
if flip_zip is None:
    st.session_state.pop("layers_zip_batches", None)  # its images no longer count for the session
if ref_runner is not None and cand_runner is not None:
    try:
        pool = zip_batches(spec, flip_zip.name, flip_zip.getvalue()) if flip_zip else batches
    except Exception as exc:
        show_error(exc, f"reading {flip_zip.name if flip_zip else 'the images'}")
        pool = batches
    changes = shown_changes(ref_runner, cand_runner, pool)
    flips = flipped(changes)
    st.caption(flips_caption(changes, reference.value, label))
    if flips:
        st.dataframe(
            flips_table(flips, pool.names, spec.labels, reference.value, label),
            hide_index=True,
            width="stretch",
            key="layers_flips",
        )
    for index, change in flips[:MAX_FLIPS_DETAILED]:
        with st.expander(flip_title(pool.names[index], change, spec.labels)):
            answers, tensors = st.columns(2)
            answers.dataframe(
                both_top_k(change, spec.labels, reference.value, label),
                hide_index=True,
                key=f"layers_flip_{index}",
            )
            worst_here = (
                report.worst_for_image(index)
                if pool is batches
                else image_worst(variant_path(spec, reference), candidate_file, pool, index)
            )
            tensors.dataframe(
                worst_tensors_table(worst_here), hide_index=True, key=f"layers_flip_tensors_{index}"
            )

st.divider()
if own is not None and scan_recipe is None:
    st.info(
        f"Keeping layers in float rebuilds {label} from this model's float file; its "
        "quantization could not be rebuilt exactly (above).",
        icon=":material/info:",
    )
    st.stop()
st.subheader("Keep layers in float")
st.caption(
    f"Builds {label} again from the float file with ai-edge-quantizer, these layers left in "
    "float, and measures it on the same images. "
    + (
        "The result is a file to download (it stays outside the model's variants)."
        if own is not None
        else "The result can be picked as a model on every page."
    )
)
ops_cell, tensors_cell, worst_cell = st.columns([2, 3, 1])
keep_ops = ops_cell.multiselect("Op types", sorted(rows["op"].unique()), key="layers_keep_ops")
keep_tensors = tensors_cell.multiselect(
    "Tensors (most damaging first)",
    [r.tensor for r in report.most_damaging(len(report.records))],
    format_func=lambda t: f"{short_name(t)}",
    key="layers_keep_tensors",
)
keep_worst = worst_cell.number_input(
    "The N most damaging",
    0,
    len(report.records),
    0,
    key="layers_keep_worst",
    help="The ops whose own error does the most damage: where it is made, not inherited.",
)
if st.button("Build and measure", key="layers_fix", type="primary"):
    selection = FloatSelection(
        tensors=tuple(keep_tensors), operations=tuple(keep_ops), worst=int(keep_worst)
    )
    try:
        st.session_state["layers_fixed"] = (
            build_fixed_file(spec, reference, own, rebuilt, batches, selection, report)
            if own is not None and rebuilt is not None
            else build_fixed_variant(spec, reference, candidate, batches, selection, report)
        )
    except Exception as exc:
        show_error(exc, f"building {spec.title} {candidate.value} with layers in float")
fixed = st.session_state.get("layers_fixed")
if fixed is not None and fixed.base == spec.name:
    st.dataframe(pd.DataFrame(fixed.rows), hide_index=True, width="stretch", key="layers_fix_table")
    file_cell, recipe_cell = st.columns(2)
    file_cell.download_button(
        "the new variant (.tflite)",
        fixed.path.read_bytes,
        file_name=fixed.path.name,
        mime="application/octet-stream",
        key="layers_fix_file",
    )
    recipe_cell.download_button(
        "its recipe (.json)",
        json.dumps(fixed.recipe, indent=2) + "\n",
        file_name=fixed.path.with_suffix(".recipe.json").name,
        mime="application/json",
        key="layers_fix_recipe",
    )

st.divider()
st.subheader("Search for the best mix")
if own is not None:
    st.info(
        f"The search starts from a variant of this model; pick one above instead of {label}.",
        icon=":material/info:",
    )
    st.stop()
st.caption(
    "On a labelled set (a zip with one folder per class, or the sample a model ships with), keep "
    "the most damaging ops in float step by step (1, 2, 4, 8, ..., then back by halves) and "
    "return the smallest file whose accuracy drop against the float model fits your budget."
)
archive = st.file_uploader("Labelled zip", type=["zip"], key="layers_zip")
last_scan = st.session_state.get("layers_scan")
scan_ranking = (
    [r.tensor for r in last_scan.scan.records]
    if last_scan is not None
    and last_scan.key[:2] == (spec.name, own.fingerprint if own else label)
    and last_scan.key[3] == "one op at a time"
    else None
)
st.caption(
    "Ops are kept in float in the order of the sensitivity scan above."
    if scan_ranking
    else "Ops are kept in float in the order of their own error (run the scan to use its order)."
)
max_drop = st.number_input(
    "Largest accuracy drop you accept (points)", 0.0, 100.0, 0.5, 0.1, key="layers_max_drop"
)
if st.button("Search", key="layers_search"):
    try:
        dataset = labelled_set(
            spec, archive.getvalue() if archive else None, archive.name if archive else ""
        )
        st.session_state["layers_search_result"] = run_search(
            spec, dataset, max_drop, candidate, ranking=scan_ranking
        )
    except Exception as exc:
        show_error(exc, f"searching {spec.title}")
found = st.session_state.get("layers_search_result")
if found is not None and found.model == spec.name:
    result = found.result
    steps = pd.DataFrame(found.rows)
    st.altair_chart(
        charts.search_chart(steps, result.float_accuracy, result.max_drop), width="stretch"
    )
    st.dataframe(steps, hide_index=True, width="stretch", key="layers_search_table")
    if result.chosen is None:
        st.warning(
            f"No mix keeps the drop within {result.max_drop:g} points, even with every "
            "quantized tensor in float.",
            icon=":material/warning:",
        )
    else:
        st.success(
            f"Chosen: {len(result.chosen.kept)} tensor(s) in float, accuracy "
            f"{result.chosen.accuracy:.2%} (float {result.float_accuracy:.2%}), "
            f"{result.chosen.size_bytes / 1e6:.2f} MB. It is now a model on every page.",
            icon=":material/check_circle:",
        )
        st.download_button(
            "the chosen variant (.tflite)",
            result.chosen.path.read_bytes,
            file_name=result.chosen.path.name,
            mime="application/octet-stream",
            key="layers_search_file",
        )
