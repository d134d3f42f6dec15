"""What the run's numbers are set against: the model zoo's ImageNet accuracy (only where it
applies: a 1000-class run at 299 px) and the previous accepted model's evaluation."""

from __future__ import annotations

from typing import Any

import pandas as pd

from irv2_core.records import EvalRecord
from irv2_core.report.tables import MAX_CLASS_ROWS, _as_percent, class_names_of, per_class_table

# MindSpore model zoo, research/cv/inception_resnet_v2 README (Ascend, ImageNet val).
ZOO_REFERENCE = {"top1": 79.96, "top5": 94.40}
ZOO_REFERENCE_NOTE = (
    "The zoo reference is ImageNet-1k val (49,920 of 50,000 images, 1000 classes) at 299 px, "
    "zoo protocol, after 250 epochs on 8 Ascend 910. It is comparable only to a run on the "
    "same data and recipe."
)
ZOO_CLASSES, ZOO_IMAGE_SIZE = 1000, 299  # what the reference was measured on


def reference_applies(num_classes: int | None, image_size: int | None) -> bool:
    """The zoo's ImageNet number describes only an ImageNet-1k (1000-class) run at 299 px."""
    return num_classes == ZOO_CLASSES and image_size == ZOO_IMAGE_SIZE


def metrics_table(evaluation: Any, with_reference: bool) -> pd.DataFrame:
    rows = []
    for name in ("top1", "top5"):
        got = _as_percent(getattr(evaluation, name, None))
        row: dict[str, Any] = {"metric": f"{name} (%)", "this run": got}
        if with_reference:
            ref = ZOO_REFERENCE[name]
            row["zoo reference"] = ref
            row["difference"] = None if got is None else round(got - ref, 2)
        rows.append(row)
    columns = ["metric", "this run"] + (["zoo reference", "difference"] if with_reference else [])
    return pd.DataFrame(rows, columns=columns)


def reference_text(ev: Any, num_classes: int | None, image_size: int | None) -> str:
    this_run = (
        f"This run: {_or_unknown(ev.count)} images, {_or_unknown(num_classes)} classes, "
        f"{_or_unknown(image_size)} px, {_or_unknown(ev.protocol)} protocol."
    )
    if reference_applies(num_classes, image_size):
        return (
            f"{this_run} The zoo reference (top-1 {ZOO_REFERENCE['top1']} %, top-5 "
            f"{ZOO_REFERENCE['top5']} %) is drawn as a dashed line in the accuracy plot. "
            f"{ZOO_REFERENCE_NOTE}"
        )
    return (
        f"{this_run} No external reference applies: the model zoo's published accuracy is for "
        f"ImageNet-1k val ({ZOO_CLASSES} classes) at {ZOO_IMAGE_SIZE} px, so it says nothing "
        "about this run."
    )


def _or_unknown(value: Any) -> Any:
    return "?" if value is None else value


def comparison_rows(
    ev: Any, base: EvalRecord | None, label: str | None
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(metric deltas, per-class changes, text) of this run's evaluation against *base*."""
    empty = pd.DataFrame()
    if base is None:
        return empty, empty, "No previous accepted model: nothing to compare with."
    rows = []
    for name in ("top1", "top5"):
        got, was = _as_percent(getattr(ev, name, None)), _as_percent(getattr(base, name))
        delta = None if got is None else round(got - was, 2)
        rows.append({"metric": f"{name} (%)", "this run": got, "baseline": was, "Δ": delta})
    loss = getattr(ev, "loss", None)
    rows.append(
        {
            "metric": "loss",
            "this run": None if loss is None else round(loss, 4),
            "baseline": round(base.loss, 4),
            "Δ": None if loss is None else round(loss - base.loss, 4),
        }
    )
    rows.append(
        {
            "metric": "images",
            "this run": getattr(ev, "count", None),
            "baseline": base.count,
            "Δ": None if ev.count is None else ev.count - base.count,
        }
    )
    # object columns: an image count stays an integer beside the percentages
    deltas = pd.DataFrame(rows, columns=["metric", "this run", "baseline", "Δ"], dtype=object)
    text = [f"Against the previous accepted model: {label or base.checkpoint}."]
    differs = [
        f"{what} {a} vs {b}"
        for what, a, b in (
            ("protocol", ev.protocol, base.protocol),
            ("image size", ev.image_size, base.image_size),
            ("images", ev.count, base.count),
        )
        if a is not None and a != b
    ]
    if differs:
        text.append("Not like for like: " + ", ".join(differs) + ".")
    changes = empty
    mine, theirs = getattr(ev, "confusion", None), base.confusion
    if mine is None or theirs is None:
        text.append("No per-class comparison: an evaluation without a confusion matrix.")
    elif len(mine) != len(theirs) or (ev.classes or []) != (base.classes or []):
        text.append("No per-class comparison: the two evaluations have different classes.")
    else:
        names = class_names_of(ev, len(mine))
        now, before = per_class_table(mine, names), per_class_table(theirs, names)
        changes = pd.DataFrame(
            {
                "class": names,
                "recall (%)": now["recall (%)"],
                "baseline recall (%)": before["recall (%)"],
                "Δ recall": (now["recall (%)"] - before["recall (%)"]).round(2),
                "precision (%)": now["precision (%)"],
                "baseline precision (%)": before["precision (%)"],
                "Δ precision": (now["precision (%)"] - before["precision (%)"]).round(2),
            }
        )
        up = int((changes["Δ recall"] > 0).sum())
        down = int((changes["Δ recall"] < 0).sum())
        text.append(
            f"Per class: recall rose for {up}, fell for {down}, "
            f"stayed for {len(changes) - up - down} of {len(changes)} classes."
        )
    return deltas, changes, " ".join(text)


def shown_changes(changes: pd.DataFrame) -> pd.DataFrame:
    """Every class when few; else the largest recall falls then rises."""
    if len(changes) <= MAX_CLASS_ROWS:
        return changes
    ordered = changes.sort_values("Δ recall", kind="stable")
    half = MAX_CLASS_ROWS // 2
    return pd.concat([ordered.head(half), ordered.tail(half)[::-1]])
