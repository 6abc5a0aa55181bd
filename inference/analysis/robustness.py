"""What breaks each variant first: accuracy under natural corruptions, severity by severity.

A robustness run evaluates the variants on a labelled set once clean and once
per corruption and severity (:mod:`inference.formats.corruptions`), streaming
the set through the same engine as :func:`~inference.analysis.evaluate.evaluate`
(this process, local workers or Ray): each condition's records come as soon as
it is done. Per variant x corruption x severity it reports the accuracy and the
agreement with the baseline variant on the same corrupted images, and per
variant the mean corruption error (mCE) relative to the baseline, ``fp32`` when
it was run: Hendrycks & Dietterich's CE is a variant's summed error over the
severities divided by the baseline's, averaged over corruptions (1.0: as robust
as fp32; above: less). The relative mCE counts only the error added by the
corruption, over the clean error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from inference.analysis.evaluate import Evaluation, evaluate, evaluate_conditions
from inference.core.errors import InputError
from inference.core.specs import AnyVariant, ModelSpec, Variant
from inference.engine.runners import Runner
from inference.engine.shards import Engine
from inference.formats.corruptions import Corruption
from inference.formats.labelled import LabelledSet

__all__ = ["Robustness", "RobustnessRecord", "corruption_runs", "robustness"]


@dataclass(frozen=True)
class RobustnessRecord:
    """One variant on one condition of the set."""

    variant: str
    corruption: str
    """A corruption's name, or ``clean``."""
    severity: int
    """1-5; 0 for the clean images."""
    accuracy: float
    agreement: float | None
    """Share of images whose top-1 equals the baseline's on the same corrupted image
    (None for the baseline itself)."""
    images: int

    def as_dict(self) -> dict[str, object]:
        return {
            "variant": self.variant,
            "corruption": self.corruption,
            "severity": self.severity,
            "accuracy": round(self.accuracy, 6),
            "agreement": None if self.agreement is None else round(self.agreement, 6),
            "images": self.images,
        }


@dataclass
class Robustness:
    """Every condition's records, and the mean corruption errors they give."""

    model: str
    baseline: str
    """The variant errors are relative to (``fp32`` when it ran, else the first variant)."""
    records: list[RobustnessRecord] = field(default_factory=list)
    engine: str = "running in this process"
    seconds: float = 0.0
    problems: tuple[str, ...] = ()

    def _errors(self) -> dict[tuple[str, str], dict[int, float]]:
        errors: dict[tuple[str, str], dict[int, float]] = {}
        for r in self.records:
            errors.setdefault((r.variant, r.corruption), {})[r.severity] = 1.0 - r.accuracy
        return errors

    def mce(self) -> dict[str, dict[str, object]]:
        """Per variant: ``mce``, ``relative_mce`` and each corruption's CE (None where undefined).

        CE(v, c) = sum_s E(v, c, s) / sum_s E(base, c, s); the relative CE subtracts
        each one's clean error from every term. Undefined when the baseline makes
        no error (or adds none) on that corruption.
        """
        errors = self._errors()
        variants = list(dict.fromkeys(r.variant for r in self.records))
        corruptions = [c for c in dict.fromkeys(r.corruption for r in self.records) if c != "clean"]
        out: dict[str, dict[str, object]] = {}
        for variant in variants:
            clean = errors.get((variant, "clean"), {}).get(0)
            base_clean = errors.get((self.baseline, "clean"), {}).get(0)
            per, relative = {}, {}
            for corruption in corruptions:
                mine = errors.get((variant, corruption), {})
                base = errors.get((self.baseline, corruption), {})
                levels = sorted(set(mine) & set(base))
                base_sum = sum(base[s] for s in levels)
                per[corruption] = sum(mine[s] for s in levels) / base_sum if base_sum > 0 else None
                if clean is None or base_clean is None:
                    relative[corruption] = None
                    continue
                added = sum(base[s] - base_clean for s in levels)
                relative[corruption] = (
                    sum(mine[s] - clean for s in levels) / added if added > 0 else None
                )
            out[variant] = {
                "mce": _mean(per.values()),
                "relative_mce": _mean(relative.values()),
                "ce": per,
                "relative_ce": relative,
            }
        return out

    def as_dict(self) -> dict[str, object]:
        """What ``robustness --json`` prints."""
        return {
            "model": self.model,
            "baseline": self.baseline,
            "engine": self.engine,
            "seconds": round(self.seconds, 3),
            "records": [r.as_dict() for r in self.records],
            "mce": self.mce(),
            "problems": list(self.problems),
        }


def _mean(values: Iterator[float | None] | Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def corruption_runs(
    spec: ModelSpec,
    runners: Mapping[AnyVariant, Runner],
    dataset: LabelledSet,
    conditions: Sequence[Corruption],
    *,
    engine: Engine | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> Iterator[tuple[Corruption, Evaluation]]:
    """Each condition's evaluation of every variant (a stream; the set is never held).

    In this process the conditions run one after another and each comes as soon
    as it is done. On workers or Ray every condition's shards go in one run, so a
    pool never waits at a condition's end and a cluster starts its actors once;
    they come together at the end.
    """
    if engine is not None and engine.kind != "process":
        done = evaluate_conditions(
            spec, runners, dataset, conditions, engine=engine, progress=progress
        )
        yield from ((c, done[c]) for c in conditions)
        return
    count = len(conditions)
    for index, condition in enumerate(conditions):
        shown = "clean" if condition.severity == 0 else f"{condition.name} {condition.severity}"

        def step(message: str, fraction: float, index: int = index, shown: str = shown) -> None:
            if progress:
                progress(f"{shown} ({index + 1}/{count}): {message}", (index + fraction) / count)

        evaluation = evaluate(
            spec, dict(runners), dataset, engine=engine, progress=step, corruption=condition
        )
        yield condition, evaluation


def robustness(
    spec: ModelSpec,
    runners: Mapping[AnyVariant, Runner],
    dataset: LabelledSet,
    conditions: Sequence[Corruption],
    *,
    engine: Engine | None = None,
    progress: Callable[[str, float], None] | None = None,
    on_records: Callable[[list[RobustnessRecord]], None] | None = None,
) -> Robustness:
    """Accuracy and agreement per variant x condition, and the mCE relative to the baseline.

    ``on_records`` is called with each condition's records as they come (the CLI
    prints them, a page redraws its chart).

    Raises:
        InputError: No variant, or none of the images could be read.
    """
    if not runners:
        raise InputError("expected at least one variant; received none")
    names = [v.value for v in runners]
    baseline = Variant.FP32.value if Variant.FP32.value in names else names[0]
    began = time.perf_counter()
    report = Robustness(model=spec.name, baseline=baseline)
    problems: list[str] = []
    for condition, evaluation in corruption_runs(
        spec, runners, dataset, conditions, engine=engine, progress=progress
    ):
        base = next(s for s in evaluation.scores if s.variant.value == baseline)
        records = [
            RobustnessRecord(
                variant=score.variant.value,
                corruption=condition.name,
                severity=condition.severity,
                accuracy=score.accuracy,
                agreement=None
                if score.variant.value == baseline
                else float(np.mean(score.top1 == base.top1)),
                images=evaluation.images,
            )
            for score in evaluation.scores
        ]
        report.records.extend(records)
        report.engine = evaluation.engine
        if not problems:
            problems = list(evaluation.problems)
        if on_records:
            on_records(records)
    report.seconds = time.perf_counter() - began
    report.problems = tuple(problems)
    return report
