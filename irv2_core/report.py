"""The run report: pandas tables written as CSV, Markdown and HTML, with PNG plots.

``build_report(run_dir)`` reads what ``train`` leaves in a run folder (``config.yaml``,
``metrics.jsonl``, ``train_summary.json``) plus the pipeline facts the flow adds (evaluation,
exports, data fingerprint, per-stage timings; from ``extra`` or the run folder's
``pipeline.json``) and writes ``report.md``, ``report.html``, one CSV per table and two plots.
Pure: pandas and matplotlib only, so ``irv2 report RUN_DIR`` works without Prefect.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from irv2_core.errors import Irv2Error
from irv2_core.records import EvalFacts, ExportFacts, PipelineFacts, ReportRecord, StageTiming
from irv2_core.runtime.io import atomic_write_text, read_json, sha256_file

__all__ = ["ZOO_REFERENCE", "PIPELINE_FILE", "build_report", "load_metrics"]

# MindSpore model zoo, research/cv/inception_resnet_v2 README (Ascend, ImageNet val).
ZOO_REFERENCE = {"top1": 79.96, "top5": 94.40}
ZOO_REFERENCE_NOTE = (
    "The zoo reference is ImageNet-1k val (49,920 of 50,000 images, 1000 classes) at 299 px, "
    "zoo protocol, after 250 epochs on 8 Ascend 910. It is comparable only to a run on the "
    "same data and recipe."
)
PIPELINE_FILE = "pipeline.json"


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
    evals = evals.sort_values("step") if len(evals) else evals
    return train.reset_index(drop=True), evals.reset_index(drop=True)


def _as_percent(value: Any) -> float | None:
    """Accuracies are fractions in the stage outputs; the report shows percent."""
    if value is None:
        return None
    value = float(value)
    return round(value * 100.0 if value <= 1.0 else value, 2)


def _metrics_table(evaluation: EvalFacts | None) -> pd.DataFrame:
    rows = []
    for name in ("top1", "top5"):
        got = _as_percent(getattr(evaluation, name, None))
        ref = ZOO_REFERENCE[name]
        rows.append(
            {
                "metric": f"{name} (%)",
                "this run": got,
                "zoo reference": ref,
                "difference": None if got is None else round(got - ref, 2),
            }
        )
    return pd.DataFrame(rows)


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


def _config_table(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "config.yaml"
    if not path.exists():
        return pd.DataFrame(columns=["key", "value"])
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return pd.DataFrame([{"key": k, "value": str(v)} for k, v in sorted(cfg.items())])


def _timings_table(timings: dict[str, StageTiming]) -> pd.DataFrame:
    rows = []
    for stage, timing in timings.items():
        rows.append({"stage": stage, "seconds": round(timing.seconds, 2), "state": timing.state})
    return pd.DataFrame(rows, columns=["stage", "seconds", "state"])


def _plot_training(train: pd.DataFrame, evals: pd.DataFrame, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # headless: the flow runs on workers without a display
    import matplotlib.pyplot as plt

    plots: list[str] = []
    if len(train) and {"loss", "lr"} <= set(train.columns):
        fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        ax_loss.plot(train["step"], train["loss"], marker=".")
        ax_loss.set_ylabel("loss")
        ax_loss.set_title("training loss and learning rate per step")
        ax_lr.plot(train["step"], train["lr"], color="tab:orange", marker=".")
        ax_lr.set_ylabel("learning rate")
        ax_lr.set_xlabel("global step")
        plots.append(_save(fig, out_dir / "loss_lr.png"))
    if len(evals) and {"top1", "top5"} <= set(evals.columns):
        fig, ax = plt.subplots(figsize=(7, 4))
        for name in ("top1", "top5"):
            ax.plot(evals["step"], [_as_percent(v) for v in evals[name]], marker="o", label=name)
        ax.set_xlabel("global step")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("top-1 / top-5 per evaluation")
        ax.legend()
        plots.append(_save(fig, out_dir / "accuracy.png"))
    return plots


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path)


def _load_extra(run_dir: Path, extra: dict[str, Any] | None) -> PipelineFacts:
    merged: dict[str, Any] = {}
    pipeline = run_dir / PIPELINE_FILE
    if pipeline.exists():
        merged.update(read_json(pipeline))
    merged.update(extra or {})
    if "evaluation" not in merged and (run_dir / "eval.json").exists():
        merged["evaluation"] = read_json(run_dir / "eval.json")
    try:
        return PipelineFacts.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise Irv2Error(
            f"the pipeline facts of {run_dir} ({PIPELINE_FILE}, eval.json, --extra) do not read "
            f"as a report's input: {problems}"
        ) from None


def _markdown(sections: list[tuple[str, pd.DataFrame | str]], plots: list[str]) -> str:
    lines = ["# Inception-ResNet-v2 run report", ""]
    for title, body in sections:
        lines += [f"## {title}", ""]
        if isinstance(body, str):
            lines += [body, ""]
        elif body.empty:
            lines += ["(none)", ""]
        else:
            lines += [_md_table(body), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


def _md_table(frame: pd.DataFrame) -> str:
    """GitHub Markdown table without the optional ``tabulate`` dependency."""
    cells = [
        [("" if pd.isna(v) else str(v)).replace("|", "\\|") for v in row] for row in frame.values
    ]
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([header, rule] + ["| " + " | ".join(r) + " |" for r in cells])


def _html(sections: list[tuple[str, pd.DataFrame | str]], plots: list[str]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>IRv2 run report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>",
        "<h1>Inception-ResNet-v2 run report</h1>",
    ]
    for title, body in sections:
        parts.append(f"<h2>{title}</h2>")
        if isinstance(body, str):
            parts.append(f"<p>{html.escape(body)}</p>")
        else:
            parts.append(
                body.to_html(index=False, na_rep="") if not body.empty else "<p>(none)</p>"
            )
    parts += [f"<img src='{Path(p).name}' alt='{Path(p).stem}'>" for p in plots]
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> ReportRecord:
    """Write the report of *run_dir* into *out_dir* (default ``RUN_DIR/report``) and list its files.

    *extra* (merged over ``RUN_DIR/pipeline.json``; see :class:`~irv2_core.records.PipelineFacts`)
    may hold ``evaluation`` ({top1, top5, ...}), ``exports`` ([{format, path, bytes, sha256}]),
    ``data_fingerprint`` and ``timings`` ({stage: seconds or {seconds, state}}). Returns the
    :class:`~irv2_core.records.ReportRecord`, whose ``tables`` maps each table name to its rows
    (for the flow's table artifacts).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise Irv2Error(f"run folder not found: {run_dir} (pass the folder `irv2 train` wrote)")
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    info = _load_extra(run_dir, extra)
    train, evals = load_metrics(run_dir)
    summary = (
        read_json(run_dir / "train_summary.json")
        if (run_dir / "train_summary.json").exists()
        else {}
    )
    tables = {
        "final_metrics": _metrics_table(info.evaluation),
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
    plots = _plot_training(train, evals, out)
    fingerprint = info.data_fingerprint or "(unknown)"
    ev = info.evaluation or EvalFacts()
    this_run = (
        f"This run: {_or_unknown(ev.count)} images, {_or_unknown(ev.image_size)} px, "
        f"{_or_unknown(ev.protocol)} protocol."
    )
    sections: list[tuple[str, pd.DataFrame | str]] = [
        ("Final metrics beside the model-zoo reference", tables["final_metrics"]),
        ("About the comparison", f"{this_run} {ZOO_REFERENCE_NOTE}"),
        ("Exports", tables["exports"]),
        ("Data fingerprint", fingerprint),
        ("Per-stage timings", tables["timings"]),
        ("Training summary", tables["training"]),
        ("Evaluations", tables["evaluations"]),
        ("Resolved config", tables["config"]),
    ]
    md_path = atomic_write_text(out / "report.md", _markdown(sections, plots))
    html_path = atomic_write_text(out / "report.html", _html(sections, plots))
    return ReportRecord(
        markdown=str(md_path),
        html=str(html_path),
        csv=csv_paths,
        plots=plots,
        tables={k: json.loads(v.to_json(orient="records")) for k, v in tables.items()},
    )


def _or_unknown(value: Any) -> Any:
    return "?" if value is None else value
