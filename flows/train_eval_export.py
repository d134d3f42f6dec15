"""The ``train-eval-export`` flow: stage -> convert -> train -> evaluate -> export -> report.

Wiring only: each stage is a task in ``tasks/``. Parameters are validated (pydantic) before any
stage runs. The workdir holds ``data/`` (staged), ``mindrecord/``, ``runs/run-<digest>/`` (with
``eval.json`` and ``report/``) and ``exports/``. Per-stage wall times and task states (Completed or
Cached) are collected into the summary and the report. Each task returns its stage record as a
JSON dict (``irv2_core.records``); the flow reads it back as that record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from flows.params import FlowParams, flow_signature, validate_params, with_signature
from flows.stages import Stages
from irv2_core.export import FORMATS
from irv2_core.records import (
    ConversionRecord,
    EvalRecord,
    ExportRecord,
    PipelineFacts,
    ReportRecord,
    StageRecord,
    TrainSummary,
)
from irv2_core.storage.layout import convert_prefix, export_prefix, run_prefix
from tasks import (
    convert_task,
    evaluate_task,
    export_options,
    export_task,
    report_task,
    stage_task,
    train_task,
)
from tasks.data import convert_digest
from tasks.promotion import current_model, promote_task
from tasks.publishing import publish_run_task
from tasks.storage import SMALL_RUN_FILES, ensure_local, open_ref, result_storage

__all__ = ["FLOW_NAME", "run_stages", "train_eval_export"]

FLOW_NAME = "train-eval-export"


def run_stages(params: FlowParams) -> dict[str, Any] | State:
    """Run every stage for validated *params* and return the flow summary."""
    logger = get_run_logger()
    cfg = params.resolve_config().to_dict()
    work = Path(params.workdir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    store = params.store()
    if store is not None:  # preflight: an unwritable output_uri fails before any stage
        open_ref(store).check_writable()
    storage = params.result_storage or (result_storage(store) if store else None)
    run = Stages(storage)

    staged = run(
        "stage",
        stage_task,
        StageRecord,
        source=params.source,
        dest=str(work / "data"),
        endpoint_url=params.endpoint_url,
        store=store,
    )
    converted = run(
        "convert",
        convert_task,
        ConversionRecord,
        data_dir=staged.dest,
        out_dir=str(work / "mindrecord"),
        input_fingerprint=staged.fingerprint,
        shards=params.shards,
        val_fraction=params.val_fraction,
        seed=cfg["seed"],
        store=store,
        source=params.source,
        source_endpoint_url=params.endpoint_url,
    )
    digest = convert_digest(staged.fingerprint, params.shards, params.val_fraction, cfg["seed"])
    data_prefix = convert_prefix(digest)
    mindrecord_dir = converted.out_dir or str(work / "mindrecord")
    trained = run(
        "train",
        train_task,
        TrainSummary,
        data_dir=mindrecord_dir,
        data_fingerprint=converted.fingerprint,
        config=cfg,
        runs_dir=str(work / "runs"),
        launch=params.launch(),
        timeout_s=params.train_timeout_s,
        store=store,
        data_prefix=data_prefix,
        node_deployment=params.node_deployment,
        join_timeout_s=params.node_join_timeout_s,
    )
    run_dir = trained.run_dir
    checkpoint = trained.final_checkpoint
    if run_dir is None or checkpoint is None:
        raise RuntimeError(f"the train task returned no run folder or final checkpoint: {trained}")
    published = {"store": store, "run_prefix": run_prefix(Path(run_dir).name)}
    metrics = run(
        "evaluate",
        evaluate_task,
        EvalRecord,
        checkpoint=checkpoint,
        data_dir=mindrecord_dir,
        data_fingerprint=converted.fingerprint,
        config=cfg,
        out=str(Path(run_dir) / "eval.json"),
        checkpoint_sha256=trained.final_sha256,
        data_prefix=data_prefix,
        **published,
    )
    exports: list[ExportRecord] = []
    options = export_options(converted.num_classes, cfg)
    for fmt in params.export_formats:
        exports.append(
            run(
                f"export-{fmt}",
                export_task,
                ExportRecord,
                checkpoint=checkpoint,
                fmt=fmt,
                out=str(work / "exports" / f"irv2{FORMATS[fmt]}"),
                options=options,
                checkpoint_sha256=trained.final_sha256,
                **published,
            )
        )
    models = store or {"uri": str(work)}  # where the record of the model in service lives
    current = current_model(models)
    facts = PipelineFacts.model_validate(
        {
            "evaluation": metrics.to_json(),
            "exports": [e.to_json() for e in exports],
            "data_fingerprint": staged.fingerprint,
            "mindrecord_fingerprint": converted.fingerprint,
            "timings": run.timings,
            **_baseline(current),
        }
    )
    if store is not None:  # this worker may hold none of the run's files (all were cached)
        ensure_local(open_ref(store), published["run_prefix"], Path(run_dir), SMALL_RUN_FILES)
    reported = run("report", report_task, ReportRecord, run_dir=run_dir, facts=facts)
    run_record = None
    if store is not None:
        lineage = _lineage(params, cfg, staged, converted, trained, metrics, exports)
        run_record = publish_run_task(store, published["run_prefix"], run_dir, lineage)
    run_id = Path(run_dir).name
    promotion = promote_task(
        models, run_id, metrics.to_json(), run_record["uri"] if run_record else run_dir,
        params.promote_max_top1_drop,
    )  # fmt: skip
    summary = {
        "top1": metrics.top1,
        "top5": metrics.top5,
        "exports": [e.path for e in exports],
        "report": reported.markdown,
        "report_html": reported.html,
        "data_fingerprint": staged.fingerprint,
        "mindrecord_fingerprint": converted.fingerprint,
        "export_checks": [
            {k: getattr(e, k) for k in ("format", "path", "verified_with", "max_abs_diff")}
            for e in exports
        ],
        "run_dir": run_dir,
        "checkpoint": checkpoint,
        "global_step": trained.global_step,
        "resumed_from_step": trained.resumed_from_step,
        "run_uri": run_record["uri"] if run_record else None,
        "timings": run.timings,
        "promotion": promotion,
    }
    logger.info(
        "top-1 %.4f, top-5 %.4f; report %s", summary["top1"], summary["top5"], summary["report"]
    )
    if not promotion["promoted"]:  # the run's state says so in the UI; nothing was overwritten
        return Completed(name="Not promoted", message=promotion["reason"], data=summary)
    return summary


def _baseline(current: dict[str, Any] | None) -> dict[str, Any]:
    """The report's comparison: the model in service, if there is one."""
    if current is None:
        return {}
    return {"baseline": current["eval"], "baseline_label": f"current model ({current['run_id']})"}


def _lineage(params, cfg, staged, converted, trained, metrics, exports) -> dict[str, Any]:
    """What ``run.json`` records: inputs, config, weights, exports and metrics of the run."""
    run_id = Path(trained.run_dir).name
    return {
        "run_id": run_id,
        "source": params.source,
        "source_fingerprint": staged.fingerprint,
        "mindrecord_fingerprint": converted.fingerprint,
        "config": cfg,
        "checkpoint": {"key": f"{run_prefix(run_id)}/final.ckpt", "sha256": trained.final_sha256},
        "exports": [
            {
                "format": e.format,
                "key": f"{export_prefix(run_id, e.format)}/{Path(e.path).name}",
                "sha256": e.sha256,
            }
            for e in exports
        ],
        "metrics": {"top1": metrics.top1, "top5": metrics.top5, "count": metrics.count},
        "resumed_from_step": trained.resumed_from_step,
    }


# The parameters are declared once, in FlowParams; the signature Prefect shows and stores is made
# from it. FlowParams validates them (field-named errors, cross-field checks) before any stage.
@flow(
    name=FLOW_NAME,
    persist_result=True,
    result_serializer="json",
    log_prints=True,
    validate_parameters=False,
)
@with_signature(flow_signature())
def train_eval_export(**parameters: Any) -> dict[str, Any]:
    """Stage *source*, convert, train, evaluate, export and report under *workdir*.

    *source* is s3://bucket/prefix (credentials from the environment / AWS chain; *endpoint_url*
    for MinIO/OBS) or a local folder of class folders. *overrides* are config keys over *preset*;
    *device_num* > 1 trains with msrun (plus *num_nodes*/*node_rank*/*master_addr* across nodes).
    Returns top1, top5, the export paths (and how each was verified), the report path, the data
    fingerprint and timings.
    """
    return run_stages(validate_params(**parameters))
