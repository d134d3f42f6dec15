"""The run report: pandas tables written as CSV, Markdown and HTML, with PNG plots.

``build_report(run_dir)`` reads what ``train`` leaves in a run folder (``config.yaml``,
``metrics.jsonl``, ``train_summary.json``) plus the pipeline facts the flow adds (evaluation with
its confusion matrix and misclassified samples, exports, data fingerprint, per-stage timings, the
previous accepted model's evaluation; from ``extra`` or the run folder's ``pipeline.json``) and
writes ``report.md`` (plots linked by file name), ``report.html`` (plots embedded: one
self-contained file), one CSV per table and the plots: accuracy per epoch, confusion matrix,
misclassified images, loss and learning rate. :func:`artifact_markdown` is the Markdown with the
plots embedded as data URIs, for the Prefect UI. The model zoo's ImageNet accuracy is shown only
for a 1000-class run at 299 px. Pure: pandas, matplotlib and Pillow, so ``irv2 report RUN_DIR``
works without Prefect (and without MindSpore).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from irv2_core.errors import Irv2Error
from irv2_core.records import (
    EvalFacts,
    EvalRecord,
    ExportFacts,
    PipelineFacts,
    ReportRecord,
    StageTiming,
)
from irv2_core.runtime.io import atomic_write_text, read_json, sha256_file

__all__ = [
    "PIPELINE_FILE",
    "PIPELINE_ORDER",
    "ZOO_REFERENCE",
    "artifact_markdown",
    "build_report",
    "confused_pairs",
    "embed_images",
    "load_metrics",
    "per_class_table",
    "png_data_uri",
    "reference_applies",
]

# MindSpore model zoo, research/cv/inception_resnet_v2 README (Ascend, ImageNet val).
ZOO_REFERENCE = {"top1": 79.96, "top5": 94.40}
ZOO_REFERENCE_NOTE = (
    "The zoo reference is ImageNet-1k val (49,920 of 50,000 images, 1000 classes) at 299 px, "
    "zoo protocol, after 250 epochs on 8 Ascend 910. It is comparable only to a run on the "
    "same data and recipe."
)
ZOO_CLASSES, ZOO_IMAGE_SIZE = 1000, 299  # what the reference was measured on
PIPELINE_FILE = "pipeline.json"
PIPELINE_ORDER = ("stage", "convert", "train", "evaluate", "export", "report")
PLOT_DPI = 72  # small PNGs: the UI artifact carries them inline
MAX_CLASS_ROWS = 20  # per-class rows shown in the Markdown/HTML (the CSV holds all)


def load_metrics(run_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``metrics.jsonl`` into (train rows, eval rows) DataFrames sorted by step.

    A line that is not a JSON object raises Irv2Error naming the file and line number, because a
    silently dropped line would make the plots lie.
    """
    path = Path(run_dir) / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    if path.exists():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise Irv2Error(
                    f"{path}, line {n}: not valid JSON ({exc.msg}); fix or delete that line"
                ) from None
            if not isinstance(row, dict):
                raise Irv2Error(f"{path}, line {n}: expected a JSON object, got {row!r}")
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty or "kind" not in frame:
        return pd.DataFrame(), pd.DataFrame()
    train = frame[frame["kind"] == "train"].dropna(axis=1, how="all")
    evals = frame[frame["kind"] == "eval"].dropna(axis=1, how="all")
    # A resumed run may log a step twice (before and after the interruption): keep the last.
    train = train.drop_duplicates("step", keep="last").sort_values("step") if len(train) else train
    evals = evals.drop_duplicates("step", keep="last").sort_values("step") if len(evals) else evals
    return train.reset_index(drop=True), evals.reset_index(drop=True)


def _as_percent(value: Any) -> float | None:
    """Accuracies are fractions in the stage outputs; the report shows percent."""
    if value is None:
        return None
    value = float(value)
    return round(value * 100.0 if value <= 1.0 else value, 2)


# --- what the run is, and whether the zoo's number says anything about it ---------------------


def _num_classes(run_dir: Path, ev: Any) -> int | None:
    """The run's class count: the evaluation's class list or matrix, else the run folder's
    ``classes.json``, else ``config.yaml``'s ``num_classes``."""
    if getattr(ev, "classes", None):
        return len(ev.classes)
    if getattr(ev, "confusion", None):
        return len(ev.confusion)
    if (run_dir / "classes.json").is_file():
        classes = read_json(run_dir / "classes.json")
        if isinstance(classes, dict | list):
            return len(classes)
    value = _config(run_dir).get("num_classes")
    return int(value) if isinstance(value, int) else None


def reference_applies(num_classes: int | None, image_size: int | None) -> bool:
    """The zoo's ImageNet number describes only an ImageNet-1k (1000-class) run at 299 px."""
    return num_classes == ZOO_CLASSES and image_size == ZOO_IMAGE_SIZE


def _metrics_table(evaluation: Any, with_reference: bool) -> pd.DataFrame:
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


def _reference_text(ev: Any, num_classes: int | None, image_size: int | None) -> str:
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


# --- per class ---------------------------------------------------------------------------------


def _class_names(ev: Any, k: int) -> list[str]:
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


def _shown_classes(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The whole per-class table when it is short; the lowest-recall classes when it is not."""
    if len(table) <= MAX_CLASS_ROWS:
        return table, ""
    worst = table.sort_values("recall (%)", kind="stable").head(MAX_CLASS_ROWS)
    note = (
        f"The {MAX_CLASS_ROWS} of {len(table)} classes with the lowest recall; "
        "per_class.csv holds every class."
    )
    return worst, note


def _misclassified_table(ev: Any, names: list[str]) -> pd.DataFrame:
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


# --- against the previous accepted model -------------------------------------------------------


def _comparison(
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
        names = _class_names(ev, len(mine))
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


def _shown_changes(changes: pd.DataFrame) -> pd.DataFrame:
    """Every class when few; else the largest recall falls then rises."""
    if len(changes) <= MAX_CLASS_ROWS:
        return changes
    ordered = changes.sort_values("Δ recall", kind="stable")
    half = MAX_CLASS_ROWS // 2
    return pd.concat([ordered.head(half), ordered.tail(half)[::-1]])


# --- the other tables ----------------------------------------------------------------------------


def _exports_table(exports: list[ExportFacts]) -> pd.DataFrame:
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


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return cfg if isinstance(cfg, dict) else {}


def _config_table(run_dir: Path) -> pd.DataFrame:
    cfg = _config(run_dir)
    return pd.DataFrame([{"key": k, "value": str(v)} for k, v in sorted(cfg.items())])


def _stage_rank(name: str) -> int:
    """Position of a stage (``export-ONNX`` counts as ``export``) in the pipeline; others last."""
    base = name.split("-", 1)[0]
    return PIPELINE_ORDER.index(base) if base in PIPELINE_ORDER else len(PIPELINE_ORDER)


def _timings_table(timings: dict[str, StageTiming]) -> pd.DataFrame:
    """One row per stage in pipeline order (stage, convert, train, evaluate, export-*, report);
    several exports, and stages the pipeline does not know, keep the order they were given."""
    ordered = sorted(timings.items(), key=lambda item: _stage_rank(item[0]))
    rows = [
        {"stage": stage, "seconds": round(t.seconds, 2), "state": t.state} for stage, t in ordered
    ]
    return pd.DataFrame(rows, columns=["stage", "seconds", "state"])


# --- plots ---------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: the flow runs on workers without a display
    import matplotlib.pyplot as plt

    return plt


def _plot_loss_lr(train: pd.DataFrame, out_dir: Path) -> Path | None:
    if not len(train) or not {"loss", "lr"} <= set(train.columns):
        return None
    plt = _pyplot()
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax_loss.plot(train["step"], train["loss"], marker=".")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss and learning rate per step")
    ax_lr.plot(train["step"], train["lr"], color="tab:orange", marker=".")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("global step")
    return _save(fig, out_dir / "loss_lr.png")


def _plot_accuracy(evals: pd.DataFrame, with_reference: bool, out_dir: Path) -> Path | None:
    """top-1/top-5 per evaluation against the epoch, each point labelled with its value."""
    if not len(evals) or not {"top1", "top5"} <= set(evals.columns):
        return None
    plt = _pyplot()
    by_epoch = "epoch" in evals.columns and evals["epoch"].notna().all()
    x = evals["epoch"] if by_epoch else evals["step"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, color in (("top1", "tab:blue"), ("top5", "tab:green")):
        values = [_as_percent(v) for v in evals[name]]
        ax.plot(x, values, marker="o", markersize=7, linewidth=2, color=color, label=name)
        for xi, v in zip(x, values, strict=True):
            if v is not None:
                ax.annotate(
                    f"{v:.1f}",
                    (xi, v),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    fontsize=9,
                    color=color,
                )
        if with_reference:
            ref = ZOO_REFERENCE[name]
            ax.axhline(ref, color=color, linestyle="--", linewidth=1, label=f"zoo {name} {ref}")
    lo, hi = float(min(x)), float(max(x))
    if hi - lo < 2:  # one or two evaluations: room around the points for their labels
        ax.set_xlim(lo - 0.5, hi + 0.5)
    if by_epoch:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, 108)
    ax.set_xlabel("epoch" if by_epoch else "global step")
    ax.set_ylabel("accuracy on val (%)")
    ax.set_title("top-1 / top-5 per evaluation")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out_dir / "accuracy.png")


def _plot_confusion(confusion: Any, names: list[str], out_dir: Path) -> Path:
    """Rows (true classes) normalised to recall for the colour; counts written when K is small."""
    plt = _pyplot()
    matrix = np.asarray(confusion, dtype=np.int64)
    k = len(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = 3.0 + 0.45 * k if k <= MAX_CLASS_ROWS else 6.0  # many classes: a smaller picture
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if k <= MAX_CLASS_ROWS:
        short = [n if len(n) <= 14 else n[:13] + "…" for n in names]
        ax.set_xticks(range(k), short, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), short, fontsize=8)
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    color = "white" if share[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color=color
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix ({int(matrix.sum())} images)")
    return _save(fig, out_dir / "confusion.png")


def _plot_misclassified(ev: Any, names: list[str], out_dir: Path) -> Path | None:
    """The misclassified thumbnails side by side, each titled true → predicted."""
    from PIL import Image

    shown = []
    for item in getattr(ev, "misclassified", None) or []:
        if not item.thumbnail or "," not in item.thumbnail:
            continue
        try:
            data = base64.b64decode(item.thumbnail.split(",", 1)[1], validate=True)
            with Image.open(io.BytesIO(data)) as img:
                shown.append((item, np.asarray(img.convert("RGB"))))
        except (OSError, ValueError):
            continue
    if not shown:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(1.7 * len(shown) + 0.3, 2.5), squeeze=False)
    for ax, (item, pixels) in zip(axes[0], shown, strict=True):
        ax.imshow(pixels)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"true {_name(names, item.label)[:12]}\npred {_name(names, item.pred)[:12]} "
            f"({100 * item.confidence:.0f}%)",
            fontsize=7,
        )
        if item.file_name:
            ax.set_xlabel(Path(item.file_name).name[:18], fontsize=6)
    return _save(fig, out_dir / "misclassified.png")


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=PLOT_DPI)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# --- inputs --------------------------------------------------------------------------------------


def _load_extra(run_dir: Path, extra: dict[str, Any] | None) -> PipelineFacts:
    merged: dict[str, Any] = {}
    pipeline = run_dir / PIPELINE_FILE
    if pipeline.exists():
        merged.update(read_json(pipeline))
    merged.update(extra or {})
    if "evaluation" not in merged and (run_dir / "eval.json").exists():
        merged["evaluation"] = read_json(run_dir / "eval.json")
    return _validate(
        PipelineFacts,
        merged,
        f"the pipeline facts of {run_dir} ({PIPELINE_FILE}, eval.json, --extra)",
    )


def _validate(model: Any, data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise Irv2Error(f"{what} do not read as a report's input: {problems}") from None


# --- rendering -----------------------------------------------------------------------------------

Block = str | pd.DataFrame | Path  # a paragraph, a table or a PNG beside the report
Section = tuple[str, list[Block]]


def _markdown(sections: list[Section]) -> str:
    lines = ["# Inception-ResNet-v2 run report", ""]
    for title, blocks in sections:
        lines += [f"## {title}", ""]
        for body in blocks:
            if isinstance(body, Path):
                lines += [f"![{body.stem}]({body.name})", ""]
            elif isinstance(body, str):
                lines += [body, ""]
            elif body.empty:
                lines += ["(none)", ""]
            else:
                lines += [_md_table(body), ""]
    return "\n".join(lines)


def _md_table(frame: pd.DataFrame) -> str:
    """GitHub Markdown table without the optional ``tabulate`` dependency."""
    cells = [
        [("" if pd.isna(v) else str(v)).replace("|", "\\|") for v in row] for row in frame.values
    ]
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([header, rule] + ["| " + " | ".join(r) + " |" for r in cells])


def png_data_uri(path: str | os.PathLike[str]) -> str:
    """The PNG file at *path* as a ``data:image/png;base64,...`` URI."""
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^()\s/\\:]+\.png)\)")


def embed_images(markdown: str, folder: str | os.PathLike[str]) -> str:
    """*markdown* with each ``![alt](name.png)`` of a PNG in *folder* replaced by a data URI.

    A Markdown artifact in the Prefect UI resolves a relative link against the UI's own URL, so
    a plot must travel inside the text; ``report.md`` on disk keeps its short relative links."""
    folder = Path(folder)

    def inline(match: re.Match[str]) -> str:
        path = folder / match.group(2)
        if not path.is_file():
            return match.group(0)
        return f"![{match.group(1)}]({png_data_uri(path)})"

    return _MD_IMAGE.sub(inline, markdown)


def artifact_markdown(report: ReportRecord) -> str:
    """The report's Markdown with its plots embedded: the ``irv2-report`` artifact's text."""
    path = Path(report.markdown)
    return embed_images(path.read_text(encoding="utf-8"), path.parent)


def _html(sections: list[Section]) -> str:
    """A self-contained page: the plots are embedded as data URIs."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>IRv2 run report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>",
        "<h1>Inception-ResNet-v2 run report</h1>",
    ]
    for title, blocks in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for body in blocks:
            if isinstance(body, Path):
                parts.append(
                    f"<p><img src='{png_data_uri(body)}' alt='{html.escape(body.stem)}'></p>"
                )
            elif isinstance(body, str):
                parts.append(f"<p>{html.escape(body)}</p>")
            elif body.empty:
                parts.append("<p>(none)</p>")
            else:
                parts.append(body.to_html(index=False, na_rep=""))
    parts.append("</body></html>")
    return "\n".join(parts)


# --- the report ----------------------------------------------------------------------------------


def build_report(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    extra: dict[str, Any] | None = None,
    baseline: EvalRecord | dict[str, Any] | None = None,
    baseline_label: str | None = None,
) -> ReportRecord:
    """Write the report of *run_dir* into *out_dir* (default ``RUN_DIR/report``) and list its files.

    *extra* (merged over ``RUN_DIR/pipeline.json``; see :class:`~irv2_core.records.PipelineFacts`)
    may hold ``evaluation`` (an EvalRecord, any of its fields), ``exports`` ([{format, path,
    bytes, sha256}]), ``data_fingerprint``, ``timings`` ({stage: seconds or {seconds, state}})
    and ``baseline``/``baseline_label``. *baseline* (the previous accepted model's EvalRecord, or
    its ``eval.json`` content) and *baseline_label* (e.g. its run id) override the facts' own.
    Returns the :class:`~irv2_core.records.ReportRecord`, whose ``tables`` maps each table name to
    its rows (for the flow's table artifacts).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise Irv2Error(f"run folder not found: {run_dir} (pass the folder `irv2 train` wrote)")
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    info = _load_extra(run_dir, extra)
    if baseline is not None:
        info.baseline = _validate(EvalRecord, baseline, "the fields of the baseline evaluation")
    if baseline_label is not None:
        info.baseline_label = baseline_label
    train, evals = load_metrics(run_dir)
    summary = (
        read_json(run_dir / "train_summary.json")
        if (run_dir / "train_summary.json").exists()
        else {}
    )
    ev = info.evaluation or EvalFacts()
    image_size = ev.image_size or _config(run_dir).get("image_size")
    num_classes = _num_classes(run_dir, ev)
    with_reference = reference_applies(num_classes, image_size)
    names = _class_names(ev, len(ev.confusion) if ev.confusion else (num_classes or 0))
    per_class = per_class_table(ev.confusion, names) if ev.confusion else pd.DataFrame()
    pairs = confused_pairs(ev.confusion, names) if ev.confusion else pd.DataFrame()
    deltas, changes, compared = _comparison(ev, info.baseline, info.baseline_label)
    tables = {
        "final_metrics": _metrics_table(ev, with_reference),
        "comparison": deltas,
        "per_class_changes": changes,
        "per_class": per_class,
        "confused_pairs": pairs,
        "misclassified": _misclassified_table(ev, names),
        "exports": _exports_table(info.exports),
        "timings": _timings_table(info.timings),
        # the summary's eval dict duplicates the evaluations table
        "training": pd.DataFrame([{k: v for k, v in summary.items() if k != "eval"}])
        if summary
        else pd.DataFrame(),
        "evaluations": evals.round(4),
        "steps": train,
        "config": _config_table(run_dir),
    }
    csv_paths = []
    for name, frame in tables.items():
        target = out / f"{name}.csv"
        atomic_write_text(target, frame.to_csv(index=False))
        csv_paths.append(str(target))
    accuracy = _plot_accuracy(evals, with_reference, out)
    confusion = _plot_confusion(ev.confusion, names, out) if ev.confusion else None
    strip = _plot_misclassified(ev, names, out)
    loss_lr = _plot_loss_lr(train, out)
    no_matrix = "The evaluation holds no confusion matrix (an older eval.json): re-run evaluate."
    shown, note = _shown_classes(per_class) if len(per_class) else (per_class, no_matrix)
    sections: list[Section] = [
        (
            "Final metrics",
            [tables["final_metrics"], _reference_text(ev, num_classes, image_size)],
        ),
        (
            "Against the previous accepted model",
            [compared]
            + ([deltas] if len(deltas) else [])
            + ([_shown_changes(changes)] if len(changes) else []),
        ),
        ("Accuracy per epoch", [accuracy] if accuracy else ["(no evaluation during training)"]),
        ("Per-class precision and recall", [b for b in (note, shown) if len(b)]),
        ("Most-confused pairs", [pairs] if ev.confusion else [no_matrix]),
        ("Confusion matrix", [confusion] if confusion else [no_matrix]),
        (
            "Misclassified validation images",
            ([strip] if strip else []) + [tables["misclassified"]],
        ),
        ("Training loss and learning rate", [loss_lr] if loss_lr else ["(no training steps)"]),
        ("Exports", [tables["exports"]]),
        ("Data fingerprint", [info.data_fingerprint or "(unknown)"]),
        ("Per-stage timings", [tables["timings"]]),
        ("Training summary", [tables["training"]]),
        ("Evaluations", [tables["evaluations"]]),
        ("Resolved config", [tables["config"]]),
    ]
    plots = [p for p in (accuracy, confusion, strip, loss_lr) if p is not None]
    md_path = atomic_write_text(out / "report.md", _markdown(sections))
    html_path = atomic_write_text(out / "report.html", _html(sections))
    return ReportRecord(
        markdown=str(md_path),
        html=str(html_path),
        csv=csv_paths,
        plots=[str(p) for p in plots],
        tables={k: json.loads(v.to_json(orient="records")) for k, v in tables.items()},
    )


def _or_unknown(value: Any) -> Any:
    return "?" if value is None else value
