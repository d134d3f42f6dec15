"""The promotion gate: compare a candidate with the model in service on the same images and
decide promote, reject or ask a person.

- **promote**: significantly better (exact McNemar, p < ``alpha``), or not worse by more than
  ``margin_points`` (the paired-bootstrap interval's lower end is above −margin), and no class
  broken; unless the deployment always asks.
- **reject**: significantly worse, or a class broken: a class with at least
  ``min_class_support`` images whose top-1 recall drops by more than ``max_class_drop_points``.
- **ask**: anything else (too few discordant images to tell), or ``approval="always"``.

Two evaluations are compared only on the same images in the same order (the same
``per_image.split_key``); the flow re-evaluates the model in service first when they are not.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from irv2_core.errors import Irv2Error
from irv2_core.promotion.stats import Paired, class_recalls, mcnemar_exact, paired_bootstrap
from irv2_core.records import EvalRecord, Item
from irv2_core.runtime.arrays import unpack_bools, unpack_ints

__all__ = [
    "ClassChange",
    "Comparison",
    "GateRules",
    "Verdict",
    "comparable",
    "compare",
    "decide",
    "judge",
]

Outcome = Literal["promote", "reject", "ask"]


class GateRules(BaseModel):
    """The gate's thresholds: deployment parameters, validated before any stage runs."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.05, gt=0, lt=0.5, description="significance level of McNemar's test")
    margin_points: float = Field(
        0.5, ge=0, le=100, description="top-1 points a candidate may be worse and still pass"
    )
    max_class_drop_points: float = Field(
        10.0, gt=0, le=100, description="recall points one class may lose before it is broken"
    )
    min_class_support: int = Field(
        20, ge=1, description="images a class needs before its recall change counts"
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="of the Δtop-1 interval")
    resamples: int = Field(2000, ge=200, le=100_000, description="bootstrap resamples")
    approval: Literal["auto", "always"] = Field(
        "auto", description="`always`: a person decides every candidate in the Prefect UI"
    )


class ClassChange(Item):
    name: str
    support: int
    baseline_recall: float
    candidate_recall: float

    @property
    def drop_points(self) -> float:
        return (self.baseline_recall - self.candidate_recall) * 100


class Comparison(Item):
    """The paired numbers behind a verdict (all top-1; Δ = candidate − baseline)."""

    images: int
    candidate_only: int = Field(description="images only the candidate gets right")
    baseline_only: int = Field(description="images only the model in service gets right")
    delta_top1_points: float
    interval_points: tuple[float, float] = Field(description="bootstrap interval of Δtop-1")
    p_value: float = Field(description="exact McNemar, two-sided")
    broken_classes: list[ClassChange] = Field(default_factory=list)
    largest_drops: list[ClassChange] = Field(
        default_factory=list, description="the classes that lost most recall (up to 5)"
    )


class Verdict(Item):
    outcome: Outcome
    reason: str
    comparison: Comparison | None = None


def comparable(candidate: EvalRecord, baseline: EvalRecord) -> bool:
    """Whether both were evaluated per image on the same images in the same order."""
    a, b = candidate.per_image, baseline.per_image
    return bool(a and b and a.split_key and a.split_key == b.split_key and a.count == b.count)


def _paired(candidate: EvalRecord, baseline: EvalRecord) -> Paired:
    if not comparable(candidate, baseline):
        raise Irv2Error(
            "the candidate and the model in service were not evaluated on the same images; "
            "re-evaluate the model in service on the candidate's split first"
        )
    a, b = candidate.per_image, baseline.per_image
    labels = unpack_ints(a.labels, a.count)
    if not np.array_equal(labels, unpack_ints(b.labels, b.count)):
        raise Irv2Error("the two evaluations' labels differ although their split_key is equal")
    return Paired(unpack_bools(a.top1, a.count), unpack_bools(b.top1, b.count), labels)


def _class_changes(paired: Paired, names: list[str], rules: GateRules) -> list[ClassChange]:
    k = max(len(names), int(paired.labels.max()) + 1)
    support = np.bincount(paired.labels, minlength=k)
    cand = class_recalls(paired.candidate, paired.labels, k)
    base = class_recalls(paired.baseline, paired.labels, k)
    return [
        ClassChange(
            name=names[i] if i < len(names) else str(i),
            support=int(support[i]),
            baseline_recall=float(base[i]),
            candidate_recall=float(cand[i]),
        )  # fmt: skip
        for i in range(k)
        if support[i] >= rules.min_class_support
    ]


def compare(candidate: EvalRecord, baseline: EvalRecord, rules: GateRules) -> Comparison:
    """The paired comparison of *candidate* with *baseline* on the same images."""
    paired = _paired(candidate, baseline)
    b, c = paired.discordant
    low, high = paired_bootstrap(paired, rules.resamples, rules.confidence)
    changes = _class_changes(paired, candidate.classes, rules)
    ranked = sorted(changes, key=lambda ch: -ch.drop_points)
    return Comparison(
        images=len(paired.labels),
        candidate_only=b,
        baseline_only=c,
        delta_top1_points=paired.delta_top1 * 100,
        interval_points=(low * 100, high * 100),
        p_value=mcnemar_exact(b, c),
        broken_classes=[ch for ch in ranked if ch.drop_points > rules.max_class_drop_points],
        largest_drops=[ch for ch in ranked[:5] if ch.drop_points > 0],
    )


def judge(comparison: Comparison, rules: GateRules) -> Verdict:
    """The outcome of *comparison* under *rules*, with a one-sentence reason."""
    cmp = comparison
    low, high = cmp.interval_points
    numbers = (
        f"Δtop-1 {cmp.delta_top1_points:+.2f} points ({rules.confidence:.0%} interval "
        f"{low:+.2f} to {high:+.2f}), McNemar p = {cmp.p_value:.3g} on "
        f"{cmp.candidate_only} + {cmp.baseline_only} discordant of {cmp.images} images"
    )
    significant = cmp.p_value < rules.alpha
    if cmp.broken_classes:
        worst = cmp.broken_classes[0]
        return Verdict(outcome="reject", comparison=cmp, reason=(
            f"class {worst.name!r} broken: recall {worst.baseline_recall:.0%} -> "
            f"{worst.candidate_recall:.0%} on {worst.support} images; {numbers}"))  # fmt: skip
    if significant and cmp.delta_top1_points < 0:
        return Verdict(outcome="reject", comparison=cmp, reason=f"significantly worse: {numbers}")
    better = significant and cmp.delta_top1_points > 0
    not_worse = low > -rules.margin_points
    if rules.approval == "always":
        return Verdict(outcome="ask", comparison=cmp, reason=f"approval always asked: {numbers}")
    if better or not_worse:
        why = "significantly better" if better else f"within {rules.margin_points:g} points"
        return Verdict(outcome="promote", comparison=cmp, reason=f"{why}: {numbers}")
    return Verdict(outcome="ask", comparison=cmp, reason=f"inconclusive: {numbers}")


def decide(
    candidate: EvalRecord,
    run_id: str,
    current: EvalRecord | None,
    current_run: str | None,
    rules: GateRules,
) -> Verdict:
    """The verdict on *candidate* (run *run_id*) against the model in service (*current_run*,
    evaluated as *current* on the candidate's images), or the first model's."""
    if current_run is None:
        if rules.approval == "always":
            return Verdict(outcome="ask", reason="no model in service yet; approval always asked")
        return Verdict(outcome="promote", reason="no model in service yet: this one becomes it")
    if current_run == run_id:
        return Verdict(outcome="promote", reason=f"{run_id} is already the model in service")
    if current is None or not comparable(candidate, current):
        return Verdict(outcome="ask", reason=(
            f"the model in service ({current_run}) could not be evaluated on the candidate's "
            "images (no checkpoint recorded for it): a person decides"))  # fmt: skip
    return judge(compare(candidate, current, rules), rules)
