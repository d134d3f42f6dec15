"""Rerun one stage of a finished run: ``re-evaluate``, ``re-export`` and ``re-report``.

Wiring only: each flow runs the pipeline's own task (``evaluate_task``, ``export_task``,
``report_task``), so caching, retries and artifacts are the same as in ``train-eval-export``, and
nothing is trained. The run is a run folder or a published run (``flows.rerun_inputs``); the
outputs go to ``<run>/reruns/<name>/`` and, for a published run, are published under
``runs/<run-id>/reruns/<name>/`` — never over the run's own files. Names:
``evaluate-<protocol>-<split>-<data fingerprint[:8]>``, ``export-<format>``,
``report-<evaluation>`` (``report-run-eval`` for the run's own evaluation).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.params import flow_signature, validate_model, with_signature
from flows.rerun_inputs import FinishedRun, eval_data, open_run, report_facts, run_config
from flows.rerun_params import ReEvaluateParams, ReExportParams, ReReportParams
from flows.stages import Stages
from irv2_core.errors import Irv2Error
from irv2_core.export import FORMATS, air_needs_ascend
from irv2_core.records import EvalRecord, ExportRecord, PipelineFacts, ReportRecord
from irv2_core.runtime.io import sha256_json
from irv2_core.storage.publish import SMALL_RUN_FILES
from tasks import evaluate_task, export_options, export_task, report_task
from tasks.publishing import publish_folder_task
from tasks.results import result_storage

__all__ = ["re_evaluate", "re_export", "re_report"]

_FLOW = {"persist_result": True, "result_serializer": "json", "log_prints": True,
         "validate_parameters": False}  # fmt: skip
_RUN_FILES = ["config.yaml", "classes.json"]  # what evaluate and export read beside final.ckpt


def _stages(run: FinishedRun) -> Stages:
    """Task runner; a published run's task results live in its store, as the pipeline's do."""
    return Stages(result_storage(run.store) if run.store else None)


def evaluate_again(params: ReEvaluateParams) -> dict[str, Any]:
    """Evaluate the run's final.ckpt as *params* say; return where the new eval.json is."""
    run = open_run(params, _RUN_FILES)
    overrides = {"eval_protocol": params.eval_protocol} if params.eval_protocol else None
    config = run_config(run, overrides)
    data_dir, fingerprint, data_prefix = eval_data(run, params.data, params.workdir)
    name = f"evaluate-{config['eval_protocol']}-{params.split}-{fingerprint[:8]}"
    out = run.out(name) / "eval.json"
    stages = _stages(run)
    record = stages(
        "evaluate",
        evaluate_task,
        EvalRecord,
        checkpoint=run.checkpoint,
        data_dir=data_dir,
        mindrecord_fingerprint=fingerprint,
        config=config,
        out=str(out),
        split=params.split,
        checkpoint_sha256=run.checkpoint_sha256,
        store=run.store,
        run_prefix=run.run_key,
        data_prefix=data_prefix,
        publish_prefix=run.publish_prefix(name),
    )
    get_run_logger().info("re-evaluation %s: top-1 %.4f -> %s", name, record.top1, out)
    return {"rerun": name, "eval": str(out), "uri": run.uri(name), "top1": record.top1,
            "top5": record.top5, "count": record.count, "protocol": record.protocol,
            "split": params.split, "timings": stages.timings}  # fmt: skip


def export_again(params: ReExportParams) -> dict[str, Any]:
    """Export the run's final.ckpt in each of *params*' formats (verified)."""
    run = open_run(params, _RUN_FILES)
    config = run_config(run)
    if reason := air_needs_ascend(params.export_formats, config["device_target"], run.run_id):
        raise Irv2Error(reason)
    options = export_options(config["num_classes"], config)
    stages, exports = _stages(run), []
    for fmt in params.export_formats:
        name = f"export-{fmt.lower()}"
        record = stages(
            f"export-{fmt}",
            export_task,
            ExportRecord,
            checkpoint=run.checkpoint,
            fmt=fmt,
            out=str(run.out(name) / f"irv2{FORMATS[fmt]}"),
            options=options,
            checkpoint_sha256=run.checkpoint_sha256,
            store=run.store,
            run_prefix=run.run_key,
            publish_prefix=run.publish_prefix(name),
        )
        exports.append({"format": fmt, "path": record.path, "uri": run.uri(name),
                        "verified_with": record.verified_with,
                        "max_abs_diff": record.max_abs_diff})  # fmt: skip
    return {"exports": exports, "timings": stages.timings}


def report_again(params: ReReportParams) -> dict[str, Any]:
    """Rebuild the run's report (on a re-evaluation when *params* name one)."""
    run = open_run(params, SMALL_RUN_FILES)
    facts = PipelineFacts.model_validate(report_facts(run, params.evaluation))
    name = f"report-{params.evaluation or 'run-eval'}"
    out = run.out(name)
    stages = _stages(run)
    reported = stages(
        "report", report_task, ReportRecord, run_dir=str(run.run_dir), facts=facts, out_dir=str(out)
    )
    if run.store is not None:
        digest = sha256_json(facts.file_content())
        publish_folder_task(run.store, run.publish_prefix(name), str(out), digest)
    return {"rerun": name, "report": reported.markdown, "report_html": reported.html,
            "uri": run.uri(name), "timings": stages.timings}  # fmt: skip


@flow(name="re-evaluate", **_FLOW)
@with_signature(flow_signature(ReEvaluateParams))
def re_evaluate(**parameters: Any) -> dict[str, Any]:
    """Evaluate a finished run again (another protocol, split or MindRecord folder); no training.

    Returns the re-evaluation's name (for re-report), its eval.json, top1, top5 and timings.
    """
    return evaluate_again(validate_model(ReEvaluateParams, parameters))


@flow(name="re-export", **_FLOW)
@with_signature(flow_signature(ReExportParams))
def re_export(**parameters: Any) -> dict[str, Any]:
    """Export a finished run again in *export_formats* (each verified); no training."""
    return export_again(validate_model(ReExportParams, parameters))


@flow(name="re-report", **_FLOW)
@with_signature(flow_signature(ReReportParams))
def re_report(**parameters: Any) -> dict[str, Any]:
    """Rebuild a finished run's report from its files (or on a re-evaluation of it)."""
    return report_again(validate_model(ReReportParams, parameters))
