"""``build_report``: read a run folder, write its tables (CSV), plots (PNG) and report (Markdown,
HTML), and return the :class:`~irv2_core.records.ReportRecord` that lists them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
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
    load_utilisation,
    read_config,
    validate_inputs,
)
from irv2_core.report.plots import (
    plot_accuracy,
    plot_confusion,
    plot_loss_lr,
    plot_misclassified,
    plot_utilisation,
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


@dataclass
class _Facts:
    """What the report is made of: the run folder's files and the pipeline's facts."""

    run_dir: Path
    info: Any  # PipelineFacts, with the baseline given to build_report
    ev: EvalFacts
    names: list[str]
    num_classes: int | None
    image_size: int | None
    with_reference: bool
    train: pd.DataFrame
    evals: pd.DataFrame
    summary: dict[str, Any]
    util: pd.DataFrame


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
    facts = _gather(run_dir, extra, baseline, baseline_label)
    tables, compared = _tables(facts)
    csv_paths = []
    for name, frame in tables.items():
        target = out / f"{name}.csv"
        atomic_write_text(target, frame.to_csv(index=False))
        csv_paths.append(str(target))
    ev, names = facts.ev, facts.names
    plots = {
        "accuracy": plot_accuracy(facts.evals, facts.with_reference, out),
        "confusion": plot_confusion(ev.confusion, names, out) if ev.confusion else None,
        "strip": plot_misclassified(ev, names, out),
        "loss_lr": plot_loss_lr(facts.train, out),
        "utilisation": plot_utilisation(facts.util, facts.train, out),
    }
    sections = _sections(facts, tables, compared, plots)
    md_path = atomic_write_text(out / "report.md", render_markdown(sections))
    html_path = atomic_write_text(out / "report.html", render_html(sections))
    return ReportRecord(
        markdown=str(md_path),
        html=str(html_path),
        csv=csv_paths,
        plots=[str(p) for p in plots.values() if p is not None],
        tables={k: json.loads(v.to_json(orient="records")) for k, v in tables.items()},
    )


def _gather(run_dir: Path, extra, baseline, baseline_label) -> _Facts:
    info = load_extra(run_dir, extra)
    if baseline is not None:
        info.baseline = validate_inputs(
            EvalRecord, baseline, "the fields of the baseline evaluation"
        )
    if baseline_label is not None:
        info.baseline_label = baseline_label
    train, evals = load_metrics(run_dir)
    summary_file = run_dir / "train_summary.json"
    ev = info.evaluation or EvalFacts()
    image_size = ev.image_size or read_config(run_dir).get("image_size")
    num_classes = count_classes(run_dir, ev)
    return _Facts(
        run_dir=run_dir,
        info=info,
        ev=ev,
        names=class_names_of(ev, len(ev.confusion) if ev.confusion else (num_classes or 0)),
        num_classes=num_classes,
        image_size=image_size,
        with_reference=reference_applies(num_classes, image_size),
        train=train,
        evals=evals,
        util=load_utilisation(run_dir),
        summary=read_json(summary_file) if summary_file.exists() else {},
    )


def _tables(f: _Facts) -> tuple[dict[str, pd.DataFrame], str]:
    """Every table of the report (each also a CSV), and the comparison's sentence."""
    ev, names, info = f.ev, f.names, f.info
    per_class = per_class_table(ev.confusion, names) if ev.confusion else pd.DataFrame()
    pairs = confused_pairs(ev.confusion, names) if ev.confusion else pd.DataFrame()
    deltas, changes, compared = comparison_rows(ev, info.baseline, info.baseline_label)
    # the summary's eval dict duplicates the evaluations table
    training = {k: v for k, v in f.summary.items() if k not in ("eval", "stack")}
    stack = f.summary.get("stack") or {}
    tables = {
        "final_metrics": metrics_table(ev, f.with_reference),
        "comparison": deltas,
        "per_class_changes": changes,
        "per_class": per_class,
        "confused_pairs": pairs,
        "misclassified": misclassified_table(ev, names),
        "exports": exports_table(info.exports),
        "timings": timings_table(info.timings),
        "training": pd.DataFrame([training]) if f.summary else pd.DataFrame(),
        "stack": pd.DataFrame({"part": list(stack), "version": [str(v) for v in stack.values()]}),
        "evaluations": f.evals.round(4),
        "steps": f.train,
        "config": config_table(f.run_dir),
    }
    return tables, compared


_NO_STACK = "(not recorded: trained by an older release)"
_NO_MATRIX = "The evaluation holds no confusion matrix (an older eval.json): re-run evaluate."


def _sections(f: _Facts, tables, compared: str, plots: dict[str, Any]) -> list[Section]:
    ev, deltas, changes = f.ev, tables["comparison"], tables["per_class_changes"]
    per_class = tables["per_class"]
    shown, note = shown_classes(per_class) if len(per_class) else (per_class, _NO_MATRIX)
    accuracy, confusion, strip, loss_lr = (plots[k] for k in ("accuracy", "confusion",
                                                             "strip", "loss_lr"))  # fmt: skip
    return [
        (
            "Final metrics",
            [tables["final_metrics"], reference_text(ev, f.num_classes, f.image_size)],
        ),
        ("Promotion", [f.info.promotion or "(not decided: a report outside the flow)"]),
        (
            "Against the previous accepted model",
            [compared]
            + ([deltas] if len(deltas) else [])
            + ([shown_changes(changes)] if len(changes) else []),
        ),
        ("Accuracy per epoch", [accuracy] if accuracy else ["(no evaluation during training)"]),
        ("Per-class precision and recall", [b for b in (note, shown) if len(b)]),
        ("Most-confused pairs", [tables["confused_pairs"]] if ev.confusion else [_NO_MATRIX]),
        ("Confusion matrix", [confusion] if confusion else [_NO_MATRIX]),
        (
            "Misclassified validation images",
            ([strip] if strip else []) + [tables["misclassified"]],
        ),
        ("Training loss and learning rate", [loss_lr] if loss_lr else ["(no training steps)"]),
        (
            "Device utilisation and throughput",
            [plots["utilisation"] or "(no samples: training ran under 10 s, or no tool)"],
        ),
        ("Exports", [tables["exports"]]),
        ("Data fingerprint", [f.info.data_fingerprint or "(unknown)"]),
        ("Per-stage timings", [tables["timings"]]),
        ("Training summary", [tables["training"]]),
        ("Software stack", [tables["stack"] if len(tables["stack"]) else _NO_STACK]),
        ("Evaluations", [tables["evaluations"]]),
        ("Resolved config", [tables["config"]]),
    ]
