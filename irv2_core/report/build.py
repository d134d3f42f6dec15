"""``build_report``: read a run folder, write its tables (CSV), plots (PNG) and report (Markdown,
HTML), and return the :class:`~irv2_core.records.ReportRecord` that lists them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from irv2_core.errors import Irv2Error
from irv2_core.records import EvalFacts, EvalRecord, ReportRecord
from irv2_core.report.compare import (
    comparison_rows,
    metrics_table,
    reference_applies,
    reference_text,
    shown_changes,
)
from irv2_core.report.inputs import (
    count_classes,
    load_extra,
    load_metrics,
    read_config,
    validate_inputs,
)
from irv2_core.report.plots import (
    plot_accuracy,
    plot_confusion,
    plot_loss_lr,
    plot_misclassified,
)
from irv2_core.report.render import Section, render_html, render_markdown
from irv2_core.report.tables import (
    class_names_of,
    config_table,
    confused_pairs,
    exports_table,
    misclassified_table,
    per_class_table,
    shown_classes,
    timings_table,
)
from irv2_core.runtime.io import atomic_write_text, read_json


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
    info = load_extra(run_dir, extra)
    if baseline is not None:
        info.baseline = validate_inputs(
            EvalRecord, baseline, "the fields of the baseline evaluation"
        )
    if baseline_label is not None:
        info.baseline_label = baseline_label
    train, evals = load_metrics(run_dir)
    summary = (
        read_json(run_dir / "train_summary.json")
        if (run_dir / "train_summary.json").exists()
        else {}
    )
    ev = info.evaluation or EvalFacts()
    image_size = ev.image_size or read_config(run_dir).get("image_size")
    num_classes = count_classes(run_dir, ev)
    with_reference = reference_applies(num_classes, image_size)
    names = class_names_of(ev, len(ev.confusion) if ev.confusion else (num_classes or 0))
    per_class = per_class_table(ev.confusion, names) if ev.confusion else pd.DataFrame()
    pairs = confused_pairs(ev.confusion, names) if ev.confusion else pd.DataFrame()
    deltas, changes, compared = comparison_rows(ev, info.baseline, info.baseline_label)
    tables = {
        "final_metrics": metrics_table(ev, with_reference),
        "comparison": deltas,
        "per_class_changes": changes,
        "per_class": per_class,
        "confused_pairs": pairs,
        "misclassified": misclassified_table(ev, names),
        "exports": exports_table(info.exports),
        "timings": timings_table(info.timings),
        # the summary's eval dict duplicates the evaluations table
        "training": pd.DataFrame([{k: v for k, v in summary.items() if k != "eval"}])
        if summary
        else pd.DataFrame(),
        "evaluations": evals.round(4),
        "steps": train,
        "config": config_table(run_dir),
    }
    csv_paths = []
    for name, frame in tables.items():
        target = out / f"{name}.csv"
        atomic_write_text(target, frame.to_csv(index=False))
        csv_paths.append(str(target))
    accuracy = plot_accuracy(evals, with_reference, out)
    confusion = plot_confusion(ev.confusion, names, out) if ev.confusion else None
    strip = plot_misclassified(ev, names, out)
    loss_lr = plot_loss_lr(train, out)
    no_matrix = "The evaluation holds no confusion matrix (an older eval.json): re-run evaluate."
    shown, note = shown_classes(per_class) if len(per_class) else (per_class, no_matrix)
    sections: list[Section] = [
        (
            "Final metrics",
            [tables["final_metrics"], reference_text(ev, num_classes, image_size)],
        ),
        (
            "Against the previous accepted model",
            [compared]
            + ([deltas] if len(deltas) else [])
            + ([shown_changes(changes)] if len(changes) else []),
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
    md_path = atomic_write_text(out / "report.md", render_markdown(sections))
    html_path = atomic_write_text(out / "report.html", render_html(sections))
    return ReportRecord(
        markdown=str(md_path),
        html=str(html_path),
        csv=csv_paths,
        plots=[str(p) for p in plots],
        tables={k: json.loads(v.to_json(orient="records")) for k, v in tables.items()},
    )
