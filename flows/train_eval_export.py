"""The ``train-eval-export`` flow: stage -> convert -> train -> evaluate -> export -> report.

Wiring only: each stage is a task in ``tasks/``. Parameters are validated (pydantic) before any
stage runs. The workdir holds ``data/`` (staged), ``mindrecord/``, ``runs/run-<digest>/`` (with
``eval.json`` and ``report/``) and ``exports/``. Per-stage wall times and task states (Completed or
Cached) are collected into the summary and the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.params import FlowParams, validate_params
from tasks import (
    convert_task,
    evaluate_task,
    export_options,
    export_task,
    report_task,
    stage_task,
    train_task,
)
from tasks.model import EXTENSIONS

__all__ = ["FLOW_NAME", "run_stages", "train_eval_export"]

FLOW_NAME = "train-eval-export"


class _Stages:
    """Runs tasks one after another, recording each one's wall time and final state name."""

    def __init__(self) -> None:
        self.timings: dict[str, dict[str, Any]] = {}

    def __call__(self, name: str, task: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        state = task(**kwargs, return_state=True)
        seconds = time.perf_counter() - start
        self.timings[name] = {"seconds": round(seconds, 3), "state": state.name}
        return state.result()  # raises the task's exception when it failed


def run_stages(params: FlowParams) -> dict[str, Any]:
    """Run every stage for validated *params* and return the flow summary."""
    logger = get_run_logger()
    cfg = params.resolve_config().to_dict()
    work = Path(params.workdir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    run = _Stages()

    staged = run(
        "stage",
        stage_task,
        source=params.source,
        dest=str(work / "data"),
        endpoint_url=params.endpoint_url,
    )
    records = run(
        "convert",
        convert_task,
        data_dir=staged["dest"],
        out_dir=str(work / "mindrecord"),
        input_fingerprint=staged["fingerprint"],
        shards=params.shards,
        val_fraction=params.val_fraction,
        seed=cfg["seed"],
    )
    trained = run(
        "train",
        train_task,
        data_dir=records["out_dir"],
        data_fingerprint=records["fingerprint"],
        config=cfg,
        runs_dir=str(work / "runs"),
        launch=params.launch(),
        timeout_s=params.train_timeout_s,
    )
    run_dir = trained["run_dir"]
    metrics = run(
        "evaluate",
        evaluate_task,
        checkpoint=trained["final_checkpoint"],
        data_dir=records["out_dir"],
        data_fingerprint=records["fingerprint"],
        config=cfg,
        out=str(Path(run_dir) / "eval.json"),
    )
    exports = []
    options = export_options(run_dir, cfg)
    for fmt in params.export_formats:
        exports.append(
            run(
                f"export-{fmt}",
                export_task,
                checkpoint=trained["final_checkpoint"],
                fmt=fmt,
                out=str(work / "exports" / f"irv2.{EXTENSIONS[fmt]}"),
                options=options,
            )
        )
    facts = {
        "evaluation": metrics,
        "exports": exports,
        "data_fingerprint": staged["fingerprint"],
        "mindrecord_fingerprint": records["fingerprint"],
        "timings": run.timings,
    }
    reported = run("report", report_task, run_dir=run_dir, facts=facts)
    summary = {
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "exports": [e["path"] for e in exports],
        "export_checks": [
            {k: e.get(k) for k in ("format", "path", "verified_with", "max_abs_diff")}
            for e in exports
        ],
        "report": reported["markdown"],
        "report_html": reported["html"],
        "data_fingerprint": staged["fingerprint"],
        "mindrecord_fingerprint": records["fingerprint"],
        "run_dir": run_dir,
        "checkpoint": trained["final_checkpoint"],
        "global_step": trained.get("global_step"),
        "timings": run.timings,
    }
    logger.info(
        "top-1 %.4f, top-5 %.4f; report %s", summary["top1"], summary["top5"], summary["report"]
    )
    return summary


@flow(name=FLOW_NAME, persist_result=True, result_serializer="json", log_prints=True)
def train_eval_export(
    source: str,
    workdir: str = "./irv2-work",
    preset: str = "cpu-smoke",
    overrides: dict[str, Any] | None = None,
    endpoint_url: str | None = None,
    device_target: str | None = None,
    device_num: int = 1,
    export_formats: list[str] | None = None,
    num_nodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    val_fraction: float = 0.2,
    shards: int = 1,
    train_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Stage *source*, convert, train, evaluate, export and report under *workdir*.

    *source* is s3://bucket/prefix (credentials from the environment / AWS chain; *endpoint_url*
    for MinIO/OBS) or a local folder of class folders. *overrides* are config keys over *preset*;
    *device_num* > 1 trains with msrun (plus *num_nodes*/*node_rank*/*master_addr* across nodes).
    Returns top1, top5, the export paths (and how each was verified), the report path, the data
    fingerprint and timings.
    """
    params = validate_params(
        source=source,
        workdir=workdir,
        preset=preset,
        overrides=overrides or {},
        endpoint_url=endpoint_url,
        device_target=device_target,
        device_num=device_num,
        export_formats=export_formats if export_formats is not None else ["MINDIR", "ONNX"],
        num_nodes=num_nodes,
        node_rank=node_rank,
        master_addr=master_addr,
        val_fraction=val_fraction,
        shards=shards,
        train_timeout_s=train_timeout_s,
    )
    return run_stages(params)
