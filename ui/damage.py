"""The Layers page's damage views: which op makes the damage, and the sensitivity scan.

Tables and chart frames are shaped here from :class:`LayerReport` and
:class:`SensitivityScan`, so the page only reads widgets, calls and renders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from inference.analysis.layer_report import LayerReport, TensorError, short_name
from inference.analysis.sensitivity import SensitivityScan, ranking_agreement, sensitivity_scan
from inference.core.specs import ModelSpec
from inference.formats.recipes import Recipe
from ui.resources import cluster

POLL_S = 0.3
"""How often the page redraws the scan's progress bar."""


def damage_rows(report: LayerReport) -> pd.DataFrame:
    """The chart's long format: each op's SNR in the model, alone, and its own at the output."""
    rows = []
    for r in report.records:
        common = {"index": r.index, "op": r.op, "tensor": short_name(r.tensor)}
        rows.append({**common, "kind": "in the model (carried)", "snr_db": r.snr_db})
        if r.own_snr_db is not None:
            rows.append({**common, "kind": "op alone (own error)", "snr_db": r.own_snr_db})
        if r.own_output_snr_db is not None:
            rows.append(
                {**common, "kind": "own error at the output", "snr_db": r.own_output_snr_db}
            )
    return pd.DataFrame(rows)


def describe_op(record: TensorError) -> str:
    return f"#{record.index} {record.op}"


def damage_help(record: TensorError) -> str:
    """One line on what an op does itself and what it receives."""
    parts = [short_name(record.tensor)]
    if record.own_output_snr_db is not None:
        parts.append(f"its own error alone takes the output to {record.own_output_snr_db:.1f} dB")
    if record.own_snr_db is not None:
        parts.append(f"alone it is at {record.own_snr_db:.1f} dB")
    parts.append(f"in the model, with what it inherits, {record.snr_db:.1f} dB")
    return "; ".join(parts)


def most_damaging_table(report: LayerReport, n: int = 10) -> pd.DataFrame:
    """The ``n`` ops that make the most damage, with what each makes and what each inherits."""
    table = pd.DataFrame(
        [
            {
                "rank": r.damage_rank,
                "#": r.index,
                "op": r.op,
                "own error at output dB": r.own_output_snr_db,
                "op alone dB": r.own_snr_db,
                "in the model dB": r.snr_db,
                "clipped": r.clipped,
                "tensor": short_name(r.tensor),
            }
            for r in report.most_damaging(n)
        ]
    )
    return table.round(2)


def highlighted(table: pd.DataFrame, tensors: list[str], picked: list[str]) -> object:
    """``table`` (rows in ``tensors`` order) with the row of the node picked on the graph marked."""
    rows = {i for i, tensor in enumerate(tensors) if tensor in picked}
    if not rows:
        return table
    mark = "background-color: #fff3b0"
    return table.style.apply(
        lambda row: [mark if row.name in rows else "" for _ in row], axis=1
    ).format(precision=2)


def by_op_table(report: LayerReport) -> pd.DataFrame:
    rows = pd.DataFrame(report.as_rows())
    return (
        rows.groupby("op")
        .agg(
            ops=("index", "size"),
            worst_own_db=("own_snr_db", "min"),
            mean_own_db=("own_snr_db", "mean"),
            min_in_model_db=("snr_db", "min"),
        )
        .sort_values("worst_own_db")
        .reset_index()
        .round(2)
    )


def report_rows(report: LayerReport) -> pd.DataFrame:
    """Every op's row of the report, shapes written ``1×112×112×32``."""
    rows = pd.DataFrame(report.as_rows())
    rows["shape"] = rows["shape"].map(lambda s: "×".join(map(str, s)))
    return rows


def report_csv(rows: pd.DataFrame) -> bytes:
    """:func:`report_rows` as CSV."""
    return rows.to_csv(index=False).encode()


@dataclass(frozen=True)
class ScanShown:
    """A finished scan, kept in the session for the model, candidate and images it ran on."""

    key: tuple[str, ...]
    scan: SensitivityScan


def run_scan(
    spec: ModelSpec,
    float_file: Path,
    recipe: Recipe,
    inputs: Sequence[np.ndarray],
    *,
    labels: Sequence[int] | None = None,
    block: str | None = None,
) -> SensitivityScan:
    """The scan in a worker thread; this script's thread draws its progress until it ends.

    Streamlit elements may be updated only from the script's own thread, so the
    scan's children report to a shared value that this loop polls.
    """
    state = {"message": "starting", "fraction": 0.0}
    lock = threading.Lock()

    def report(message: str, fraction: float) -> None:
        with lock:
            state.update(message=message, fraction=fraction)

    engine = cluster()
    where = engine.description if engine else "starting the workers"
    bar = st.progress(0.0, text=f"Sensitivity scan: {where}")
    start = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            sensitivity_scan,
            spec,
            float_file,
            recipe,
            inputs,
            labels,
            block=block,
            progress=report,
            engine=engine,
        )
        while not future.done():
            with lock:
                fraction, message = state["fraction"], state["message"]
            bar.progress(
                min(max(fraction, 0.0), 1.0),
                text=f"Sensitivity scan: {message} · {time.perf_counter() - start:.0f} s",
            )
            time.sleep(POLL_S)
        scan = future.result()
    bar.progress(1.0, text=f"Sensitivity scan: {len(scan.records)} targets in {scan.seconds:.0f} s")
    return scan


def scan_rows(scan: SensitivityScan) -> pd.DataFrame:
    rows = pd.DataFrame([r.as_dict() for r in scan.records])
    rows["op label"] = [f"#{r.index} {r.op}" for r in scan.records]
    return rows


def agreement_line(report: LayerReport, scan: SensitivityScan) -> str:
    """How far the one-pass ranking agrees with the scan, in one sentence."""
    found = ranking_agreement(report, scan)
    if found["spearman"] is None:
        return "The one-pass ranking and the scan share too few ops to compare."
    first = "the same op" if found["same_first"] else "different ops"
    return (
        f"The one-pass ranking (own error) and the scan put {first} first; "
        f"{found['top5_overlap']} of the scan's 5 most sensitive ops are in the one-pass top 5; "
        f"Spearman's rank correlation over {found['ops']} ops: {found['spearman']:.2f}."
    )
