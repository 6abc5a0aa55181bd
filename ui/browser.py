"""The "In your browser" panel: the same variants run on the visitor's device with LiteRT.js.

The component (``components/browser_runner``, built with ``npm ci && npm run
build`` there; the build is committed because Community Cloud runs no npm)
fetches each variant from ``/api/browser-file`` and runs it on the tensors the
server computed here, so preprocessing stays in one place.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st
import streamlit.components.v1 as components

from inference import InferenceError, ModelSpec, Prediction, preprocess
from inference.core.specs import AnyVariant, Source
from inference.registry.catalog import resolve
from ui.resources import Shown, visitor

BUILD_DIR = Path(__file__).resolve().parents[1] / "components" / "browser_runner" / "build"
RUNS = 10
WARMUP = 2
_runner = components.declare_component("browser_runner", path=str(BUILD_DIR))


def _variant_url(spec: ModelSpec, variant: AnyVariant) -> str:
    # The session token opens this visitor's own recipe variants to the file route.
    query = urlencode({"model": spec.name, "variant": variant.value, "session": visitor().token})
    return f"/api/browser-file?{query}"


def _servable(spec: ModelSpec, variants: Sequence[AnyVariant]) -> list[AnyVariant]:
    """The variants ``/api/browser-file`` will serve; each other one is named in one line."""
    servable = []
    for variant in variants:
        try:
            resolve(spec.name, variant.value, session=visitor(), original=False, single=True)
        except InferenceError as exc:
            st.caption(f"{variant.value} stays on the server: {exc}")
            continue
        servable.append(variant)
    return servable


def browser_panel(spec: ModelSpec, shown: Sequence[Shown], variants: Sequence[AnyVariant]) -> None:
    """Run ``variants`` in the visitor's browser on the shown images; compare with the server."""
    st.divider()
    st.subheader("In your browser")
    if spec.source is Source.CUSTOM:
        st.info("The browser panel runs the zoo's models; your own model runs on the server only.")
        return
    runnable = _servable(spec, [v for v in variants if v.is_tflite])
    if not runnable or not shown:
        st.info("Choose a TFLite variant (fp32, int8, ...) to run it in your browser.")
        return
    names = ", ".join(v.value for v in runnable)
    st.caption(
        f"Downloads {names} to this browser and runs them with LiteRT.js (WebAssembly, or "
        f"WebGPU where the browser has it) on the tensors the server computed: {WARMUP} "
        f"warm-up runs, then the median of {RUNS}. The files come from this server, nothing "
        "from elsewhere."
    )
    # A run belongs to these images and variants; its answer is kept, so later reruns
    # neither re-send the tensors nor mount the component again.
    signature = (spec.name, tuple(v.value for v in runnable), tuple(i.image.digest for i in shown))
    if st.button("Run in my browser", key="classify_browser_run"):
        st.session_state["browser_run"] = (uuid.uuid4().hex, signature)
    run_id, ran_on = st.session_state.get("browser_run", (None, None))
    if run_id is None or ran_on != signature:
        return
    value = st.session_state.get("browser_value")
    if not value or value.get("run_id") != run_id:
        value = _runner(
            run_id=run_id,
            variants=[{"name": v.value, "url": _variant_url(spec, v)} for v in runnable],
            images=[_tensor(spec, item) for item in shown],
            runs=RUNS,
            warmup=WARMUP,
            k=5,
            outputs=spec.outputs,
            key="classify_browser",
            default=None,
            height=40,
        )
        if not value or value.get("run_id") != run_id:
            return
        st.session_state["browser_value"] = value
    if value.get("error"):
        st.warning(value["error"], icon=":material/block:")
        return
    for skipped in value.get("skipped") or []:
        st.warning(
            f"{skipped['variant']} could not run in this browser: {skipped['error']}",
            icon=":material/block:",
        )
    if not value.get("results"):
        return
    server = {(item.image.name, v.value): item.results[v] for item in shown for v in runnable}
    rows = _rows(value["results"], server, spec.labels)
    same = sum(bool(row["same top-1"]) for row in rows)
    medians = ", ".join(
        f"{row['variant']} {row['browser median ms']:.1f} ms here, {row['server ms']:.1f} ms on "
        "the server"
        for row in rows[:: max(1, len(shown))]
    )
    st.markdown(
        f"Same top-1 as the server in **{same} of {len(rows)}** (backend "
        f"{rows[0]['backend']}): {medians}."
    )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        key="classify_browser_table",
        column_config={
            "browser score": st.column_config.NumberColumn(format="percent"),
            "browser load ms": st.column_config.NumberColumn(format="%.0f"),
            "browser median ms": st.column_config.NumberColumn(format="%.2f"),
            "server ms": st.column_config.NumberColumn(format="%.2f"),
        },
    )


def _tensor(spec: ModelSpec, item: Shown) -> dict[str, object]:
    """The server's preprocessed input for one image, as the component takes it."""
    batch = preprocess(item.picture, spec.preprocessing).astype(np.float32)
    return {
        "name": item.image.name,
        "input_b64": base64.b64encode(batch.tobytes()).decode(),
        "shape": list(batch.shape),
    }


def _rows(
    results: list[dict], server: dict[tuple[str, str], Prediction], labels: Sequence[str]
) -> list[dict[str, object]]:
    rows = []
    for result in results:
        index, score = result["top"][0]
        theirs = server.get((result["image"], result["variant"]))
        rows.append(
            {
                "image": result["image"],
                "variant": result["variant"],
                "browser top-1": labels[int(index)],
                "browser score": float(score),
                "browser top-5": ", ".join(f"{labels[int(i)]} {p:.1%}" for i, p in result["top"]),
                "server top-1": theirs.top_k[0].label if theirs else None,
                "same top-1": theirs is not None and theirs.top_k[0].index == int(index),
                "backend": result["backend"],
                "browser load ms": result["load_ms"],
                "browser median ms": result["median_ms"],
                "server ms": theirs.timing.inference if theirs else None,
            }
        )
    return rows
