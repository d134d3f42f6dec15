"""The report's inputs: a run folder's metrics log and config, and the pipeline facts the flow
adds (``pipeline.json``, ``eval.json`` or ``extra``), each with a clear error when malformed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import ValidationError

from irv2_core.errors import Irv2Error
from irv2_core.records import PipelineFacts
from irv2_core.runtime.io import read_json

PIPELINE_FILE = "pipeline.json"


def load_metrics(run_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``metrics.jsonl`` into (train rows, eval rows) DataFrames sorted by step.

    A line that is not a JSON object raises Irv2Error naming the file and line number, because a
    silently dropped line would make the plots lie.
    """
    frame = _metric_rows(run_dir)
    if frame.empty or "kind" not in frame:
        return pd.DataFrame(), pd.DataFrame()
    train = frame[frame["kind"] == "train"].dropna(axis=1, how="all")
    evals = frame[frame["kind"] == "eval"].dropna(axis=1, how="all")
    # A resumed run may log a step twice (before and after the interruption): keep the last.
    train = train.drop_duplicates("step", keep="last").sort_values("step") if len(train) else train
    evals = evals.drop_duplicates("step", keep="last").sort_values("step") if len(evals) else evals
    return train.reset_index(drop=True), evals.reset_index(drop=True)


def load_utilisation(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The device-utilisation samples of ``metrics.jsonl`` (``kind: util``), oldest first."""
    frame = _metric_rows(run_dir)
    if frame.empty or "kind" not in frame:
        return pd.DataFrame()
    util = frame[frame["kind"] == "util"].dropna(axis=1, how="all")
    return util.sort_values("time").reset_index(drop=True) if len(util) else pd.DataFrame()


def _metric_rows(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
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
    return pd.DataFrame(rows)


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return cfg if isinstance(cfg, dict) else {}


def count_classes(run_dir: Path, ev: Any) -> int | None:
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
    value = read_config(run_dir).get("num_classes")
    return int(value) if isinstance(value, int) else None


def load_extra(run_dir: Path, extra: dict[str, Any] | None) -> PipelineFacts:
    merged: dict[str, Any] = {}
    pipeline = run_dir / PIPELINE_FILE
    if pipeline.exists():
        merged.update(read_json(pipeline))
    merged.update(extra or {})
    if "evaluation" not in merged and (run_dir / "eval.json").exists():
        merged["evaluation"] = read_json(run_dir / "eval.json")
    return validate_inputs(
        PipelineFacts,
        merged,
        f"the pipeline facts of {run_dir} ({PIPELINE_FILE}, eval.json, --extra)",
    )


def validate_inputs(model: Any, data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise Irv2Error(f"{what} do not read as a report's input: {problems}") from None
