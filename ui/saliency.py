"""Where each variant looks: saliency overlays, float-minus-quantized maps and their IoU."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import streamlit as st
from PIL import Image

from inference import ModelSpec, prepare_image
from inference.analysis.saliency import (
    SaliencyMap,
    SaliencyOptions,
    difference,
    explain,
    overlay,
    pairs,
)
from inference.core.specs import AnyVariant
from inference.engine.runners import Runner

METHODS = {
    "occlusion": "Occlusion (a sliding square of the image's mean colour)",
    "rise": "RISE (500 random masks)",
}


@st.cache_data(max_entries=32, show_spinner=False)
def _maps(
    digest: str, model: str, files: tuple[str, ...], scaling: str, method: str,
    _spec: ModelSpec, _runners: Mapping[AnyVariant, Runner], _picture: Image.Image,
) -> list[SaliencyMap]:  # fmt: skip
    """One image's maps, kept per image, model, variant files, preprocessing and method.

    The variants' files (names carry their content's fingerprint) and the model's
    preprocessing are in the key: a file converted again or a model brought with
    other scaling is a new entry, not a stale one.
    """
    return explain(_spec, _runners, _picture, options=SaliencyOptions(method=method))


def ordered(runners: Mapping[AnyVariant, Runner], reference: AnyVariant) -> dict:
    """``runners`` with the reference first: its top-1 is the class every map explains."""
    return {reference: runners[reference], **{v: r for v, r in runners.items() if v != reference}}


def saliency_section(
    spec: ModelSpec,
    runners: Mapping[AnyVariant, Runner],
    reference: AnyVariant,
    digest: str,
    picture: Image.Image,
    method: str,
) -> list[SaliencyMap]:
    """Overlays per variant, the reference's map minus each other's, and one IoU per pair."""
    chosen = ordered(runners, reference)
    files = tuple(f"{v.value}:{getattr(r, 'path', '')}" for v, r in chosen.items())
    with st.spinner(f"Computing {method} saliency for {len(chosen)} variants…"):
        maps = _maps(digest, spec.name, files, spec.preprocessing.describe(), method,
                     spec, chosen, picture)  # fmt: skip
    seen = prepare_image(picture, spec.preprocessing).convert("RGB")
    first = maps[0]
    st.markdown(
        f"**Where each variant looks** for *{first.target.label}* ({reference.value}'s top-1): "
        "bright = hiding it costs that class the most"
    )
    columns = st.columns(len(maps))
    for column, found in zip(columns, maps, strict=True):
        column.image(
            overlay(seen, found.saliency),
            caption=f"{found.variant.value}: p = {found.score:.2f}, {found.seconds:.2f} s",
            width="stretch",
        )
    compared = pairs(maps)
    if compared:
        st.markdown(
            f"**{reference.value} minus each variant** (red: {reference.value} relies on it "
            "more; blue: less) and the overlap of their top 10 % regions (IoU)"
        )
        columns = st.columns(len(maps))
        for column, found, row in zip(columns[1:], maps[1:], compared, strict=True):
            column.image(
                difference(first.saliency, found.saliency),
                caption=f"{reference.value} − {found.variant.value}: IoU {row['iou_top10']:.2f}",
                width="stretch",
            )
        st.dataframe(
            pd.DataFrame(compared).rename(
                columns={"iou_top10": "IoU top 10 %", "peak_distance": "peaks apart (px)"}
            ),
            hide_index=True,
            width="stretch",
            key=f"classify_saliency_{digest}",
            column_config={
                "IoU top 10 %": st.column_config.NumberColumn(format="%.3f"),
                "peaks apart (px)": st.column_config.NumberColumn(format="%.1f"),
            },
        )
    return maps
