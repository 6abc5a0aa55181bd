"""The one pipeline the CLI, the API and the pages call: resolve, load, decode once, classify."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference import Variant
from inference.core.errors import NotAllowedError
from inference.pipeline import NotConvertedError, Pipeline, PipelineOptions, classify
from tests.conftest import CAT_CLASSES, RunnerPool

LITE0 = "efficientnet_lite0"


def test_a_pipeline_answers_for_every_variant_on_one_decode(
    runners: RunnerPool, chelsea: Path
) -> None:
    by_itself = classify(runners.get(LITE0, Variant.INT8), chelsea, k=3)

    with Pipeline(LITE0, "fp32,int8", options=PipelineOptions(top_k=3)) as pipeline:
        answers = pipeline(chelsea)

    assert [a.variant for a in answers] == [Variant.FP32, Variant.INT8]
    assert all(a.top_k[0].label in CAT_CLASSES and len(a.top_k) == 3 for a in answers)
    assert answers[0].timing.decode == answers[1].timing.decode  # decoded once
    assert [c.index for c in answers[1].top_k] == [c.index for c in by_itself.top_k]
    assert answers[1].top_k[0].score == pytest.approx(by_itself.top_k[0].score, abs=1e-6)


def test_a_pipeline_that_may_not_convert_names_the_missing_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QUANTLENS_CACHE_DIR", str(tmp_path))  # nothing converted here
    pipeline = Pipeline(LITE0, "int8", options=PipelineOptions(convert=False))

    with pytest.raises(NotConvertedError, match="efficientnet_lite0 int8 is not converted yet"):
        pipeline.runners()


def test_a_pipeline_refuses_the_original_where_it_is_not_allowed() -> None:
    with pytest.raises(NotAllowedError):
        Pipeline(LITE0, "original", options=PipelineOptions(original=False))
