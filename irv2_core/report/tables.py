"""The report's tables as pandas DataFrames: per class, most-confused pairs, misclassified images,
exports, per-stage timings and the resolved config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irv2_core.records import ExportFacts, StageTiming
from irv2_core.report.inputs import read_config
from irv2_core.runtime.io import sha256_file

PIPELINE_ORDER = ("stage", "convert", "train", "evaluate", "export", "report")
MAX_CLASS_ROWS = 20  # per-class rows shown in the Markdown/HTML (the CSV holds all)


def _as_percent(value: Any) -> float | None:
    """Accuracies are fractions in the stage outputs; the report shows percent."""
    if value is None:
        return None
    value = float(value)
    return round(value * 100.0 if value <= 1.0 else value, 2)


def class_names_of(ev: Any, k: int) -> list[str]:
    names = list(getattr(ev, "classes", None) or [])
    return names if len(names) == k else [str(i) for i in range(k)]


def _pct(num: float, den: float) -> float | None:
    return None if den == 0 else round(100.0 * num / den, 2)


def per_class_table(confusion: Any, classes: list[str] | None = None) -> pd.DataFrame:
    """Per-class images, precision, recall and F1 (%) from a K x K confusion matrix (row = true
    class, column = predicted), plus the class each one is most often mistaken for. Precision
    of a class never predicted is empty (undefined), not 0."""
    matrix = np.asarray(confusion, dtype=np.int64)
    k = len(matrix)
    names = classes if classes and len(classes) == k else [str(i) for i in range(k)]
    rows = []
    for i in range(k):
        hits, images, predicted = matrix[i, i], matrix[i].sum(), matrix[:, i].sum()
        precision, recall = _pct(hits, predicted), _pct(hits, images)
        f1 = (
            None
            if precision is None or recall is None or precision + recall == 0
            else round(2 * precision * recall / (precision + recall), 2)
        )
        off = matrix[i].copy()
        off[i] = 0
        worst = int(off.argmax())
        rows.append(
            {
                "class": names[i],
                "images": int(images),
                "correct": int(hits),
                "predicted as it": int(predicted),
                "precision (%)": precision,
                "recall (%)": recall,
                "F1 (%)": f1,
                "most often taken for": f"{names[worst]} ({int(off[worst])})" if off[worst] else "",
            }
        )
    return pd.DataFrame(rows)


def confused_pairs(confusion: Any, classes: list[str] | None = None, top: int = 10) -> pd.DataFrame:
    """The *top* (true, predicted) pairs with the most wrong images, most first."""
    matrix = np.asarray(confusion, dtype=np.int64)
    k = len(matrix)
    names = classes if classes and len(classes) == k else [str(i) for i in range(k)]
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    rows = []
    for true, pred in zip(*np.unravel_index(flat, off.shape), strict=True):
        if off[true, pred] == 0:
            break
        rows.append(
            {
                "true class": names[true],
                "predicted as": names[pred],
                "images": int(off[true, pred]),
                "% of the true class": _pct(off[true, pred], matrix[true].sum()),
            }
        )
    return pd.DataFrame(
        rows, columns=["true class", "predicted as", "images", "% of the true class"]
    )


def shown_classes(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The whole per-class table when it is short; the lowest-recall classes when it is not."""
    if len(table) <= MAX_CLASS_ROWS:
        return table, ""
    worst = table.sort_values("recall (%)", kind="stable").head(MAX_CLASS_ROWS)
    note = (
        f"The {MAX_CLASS_ROWS} of {len(table)} classes with the lowest recall; "
        "per_class.csv holds every class."
    )
    return worst, note


def misclassified_table(ev: Any, names: list[str]) -> pd.DataFrame:
    rows = []
    for item in getattr(ev, "misclassified", None) or []:
        rows.append(
            {
                "file": item.file_name or f"#{item.index}",
                "true class": _name(names, item.label),
                "predicted as": _name(names, item.pred),
                "confidence (%)": round(100.0 * item.confidence, 1),
            }
        )
    return pd.DataFrame(rows, columns=["file", "true class", "predicted as", "confidence (%)"])


def _name(names: list[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)


def exports_table(exports: list[ExportFacts]) -> pd.DataFrame:
    rows = []
    for item in exports:
        path = Path(item.path)
        size = item.bytes
        digest = item.sha256
        if path.exists():  # trust the file over a stale record
            size = path.stat().st_size
            digest = digest or sha256_file(path)
        rows.append(
            {
                "format": item.format,
                "path": str(path),
                "bytes": size,
                "MiB": None if size is None else round(size / 2**20, 1),
                "sha256": digest,
                "verified_with": item.verified_with,
                "max_abs_diff": item.max_abs_diff,
            }
        )
    columns = ["format", "path", "bytes", "MiB", "sha256", "verified_with", "max_abs_diff"]
    return pd.DataFrame(rows, columns=columns)


def config_table(run_dir: Path) -> pd.DataFrame:
    cfg = read_config(run_dir)
    return pd.DataFrame([{"key": k, "value": str(v)} for k, v in sorted(cfg.items())])


def _stage_rank(name: str) -> int:
    """Position of a stage (``export-ONNX`` counts as ``export``) in the pipeline; others last."""
    base = name.split("-", 1)[0]
    return PIPELINE_ORDER.index(base) if base in PIPELINE_ORDER else len(PIPELINE_ORDER)


def timings_table(timings: dict[str, StageTiming]) -> pd.DataFrame:
    """One row per stage in pipeline order (stage, convert, train, evaluate, export-*, report);
    several exports, and stages the pipeline does not know, keep the order they were given.
    With device-hours (a flow run's), their columns and a total row (cost with a rate card)."""
    ordered = sorted(timings.items(), key=lambda item: _stage_rank(item[0]))
    rows = [
        {"stage": stage, "seconds": round(t.seconds, 2), "state": t.state, "devices": t.devices,
         "device_hours": t.device_hours, "cost": t.cost}
        for stage, t in ordered
    ]  # fmt: skip
    columns = ["stage", "seconds", "state"]
    if any(t.device_hours is not None for t in timings.values()):  # a flow run's (metered)
        columns += ["devices", "device_hours"]
        total = {
            "stage": "total",
            "seconds": round(sum(t.seconds for t in timings.values()), 2),
            "device_hours": round(sum(t.device_hours or 0 for t in timings.values()), 6),
        }
        if any(t.cost is not None for t in timings.values()):
            columns.append("cost")
            total["cost"] = round(sum(t.cost or 0 for t in timings.values()), 6)
        rows.append(total)  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
