"""The ``train-eval-export`` flow: stage -> convert -> train -> evaluate -> export -> report.

Wiring only: each stage is a task in ``tasks/``. Parameters are validated (pydantic) before any
stage runs. The workdir holds ``data/`` (staged), ``mindrecord/``, ``runs/run-<digest>/`` (with
``eval.json`` and ``report/``) and ``exports/``. Per-stage wall times and task states (Completed or
Cached) are collected into the summary and the report. Each task returns its stage record as a
JSON dict (``irv2_core.records``); the flow reads it back as that record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Cancelled, Completed, State

from flows.params import FlowParams, flow_signature, validate_params, with_signature
from flows.promoting import PromotionSteps
from flows.stages import Stages
from irv2_core.export import FORMATS
from irv2_core.lineage import FlowSummary
from irv2_core.records import (
    ConversionRecord,
    EvalRecord,
    ExportRecord,
    PipelineFacts,
    ReportRecord,
    StageRecord,
    TrainSummary,
)
from irv2_core.runtime.cost import BudgetExceeded, Meter, devices_held
from irv2_core.storage.layout import export_prefix, run_prefix
from irv2_core.storage.publish import StoreRef
from tasks import (
    convert_task,
    evaluate_task,
    export_options,
    export_task,
    report_task,
    stage_task,
    train_task,
)
from tasks.costs import rate_card_variable
from tasks.publishing import check_writable_task, publish_run_task
from tasks.results import result_storage

__all__ = ["FLOW_NAME", "run_stages", "train_eval_export"]

FLOW_NAME = "train-eval-export"


def _prefix(record: Any) -> str | None:
    """Where a stage published its output (None without a store)."""
    return record.address.prefix if record.address is not None else None


def run_stages(params: FlowParams) -> dict[str, Any] | State:
    """Run every stage for validated *params* and return the flow summary."""
    work = Path(params.workdir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    store = params.store()
    # a rate card from the workspace's Variable is checked like a parameter: before any stage
    meter = Meter(params.rate_card or rate_card_variable(), params.budget_device_hours)
    if store is not None:  # preflight: an unwritable output_uri fails before any stage
        check_writable_task(store)
    storage = params.result_storage or (result_storage(store) if store else None)
    cfg = params.resolve_config().to_dict()

    def held(stage: str) -> tuple[str, int]:  # the pod's devices; training: every node's
        nodes = params.num_nodes if stage == "train" else 1
        return devices_held(cfg["device_target"], params.device_num, nodes)

    pipe = _Pipeline(params, cfg, work, store, Stages(storage, meter, held))
    try:
        converted = pipe.data()
        trained = pipe.train(converted)
        metrics, exports = pipe.model_stages(converted, trained)
    except BudgetExceeded as exc:  # the run stops as a person cancelling it would
        get_run_logger().warning("%s", exc)
        return Cancelled(message=str(exc), data={"timings": pipe.run.timings, **meter.totals()})
    return pipe.finish(converted, trained, metrics, exports)


@dataclass
class _Pipeline:
    """One flow run's wiring: what every stage call shares."""

    params: FlowParams
    cfg: dict[str, Any]
    work: Path
    store: StoreRef | None
    run: Stages
    facts: dict[str, Any] = field(default_factory=dict)

    def data(self) -> ConversionRecord:
        """stage, then convert: the MindRecord conversion the run trains on."""
        params, work = self.params, self.work
        staged = self.run("stage", stage_task, StageRecord, source=params.source,
                          dest=str(work / "data"), endpoint_url=params.endpoint_url,
                          store=self.store)  # fmt: skip
        self.facts["data_fingerprint"] = staged.fingerprint
        return self.run(
            "convert",
            convert_task,
            ConversionRecord,
            data_dir=staged.dest,
            out_dir=str(work / "mindrecord"),
            input_fingerprint=staged.fingerprint,
            shards=params.shards,
            val_fraction=params.val_fraction,
            seed=self.cfg["seed"],
            store=self.store,
            source=params.source,
            source_endpoint_url=params.endpoint_url,
        )

    def mindrecord(self, converted: ConversionRecord) -> dict[str, Any]:
        """How train and evaluate find the conversion: here, or by its address in the store."""
        return {
            "data_dir": converted.out_dir or str(self.work / "mindrecord"),
            "mindrecord_fingerprint": converted.fingerprint,
            "data_prefix": _prefix(converted),
        }

    def train(self, converted: ConversionRecord) -> TrainSummary:
        """train on the conversion (named by its address in the store)."""
        params = self.params
        trained = self.run(
            "train",
            train_task,
            TrainSummary,
            config=self.cfg,
            runs_dir=str(self.work / "runs"),
            launch=params.launch(),
            timeout_s=params.train_timeout_s,
            budget_s=self.run.budget_s("train"),
            stop_grace_s=params.stop_grace_s,
            accept_stack_change=params.accept_stack_change,
            store=self.store,
            node_deployment=params.node_deployment,
            join_timeout_s=params.node_join_timeout_s,
            gang=params.gang.model_dump() if params.gang else None,
            **self.mindrecord(converted),
        )
        if trained.run_dir is None or trained.final_checkpoint is None:
            raise RuntimeError(f"the train task returned no run folder or checkpoint: {trained}")
        return trained

    def model_stages(self, converted, trained) -> tuple[EvalRecord, list[ExportRecord]]:
        """evaluate, then each export, of the trained checkpoint (published beside the run)."""
        checkpoint = {"checkpoint": trained.final_checkpoint,
                      "checkpoint_sha256": trained.final_sha256,
                      "store": self.store, "run_prefix": _prefix(trained)}  # fmt: skip
        metrics = self.run(
            "evaluate",
            evaluate_task,
            EvalRecord,
            config=self.cfg,
            out=str(Path(trained.run_dir) / "eval.json"),
            **self.mindrecord(converted),
            **checkpoint,
        )
        options = export_options(converted.num_classes, self.cfg)
        exports = [
            self.run(
                f"export-{fmt}",
                export_task,
                ExportRecord,
                fmt=fmt,
                out=str(self.work / "exports" / f"irv2{FORMATS[fmt]}"),
                options=options,
                **checkpoint,
            )  # fmt: skip
            for fmt in self.params.export_formats
        ]
        return metrics, exports

    def finish(self, converted, trained, metrics, exports) -> dict[str, Any] | State:
        """judge, report, publish run.json, decide (a person when the gate asks), promote; the
        summary (the state says so when the candidate is not promoted)."""
        steps = PromotionSteps(self, converted, trained)
        baseline = steps.baseline(metrics)
        verdict = steps.judge(metrics, baseline)
        facts = PipelineFacts.model_validate(
            {
                "evaluation": metrics.to_json(),
                "exports": [e.to_json() for e in exports],
                "data_fingerprint": self.facts["data_fingerprint"],
                "mindrecord_fingerprint": converted.fingerprint,
                "timings": self.run.timings,
                "promotion": steps.report_section(verdict),
                **_baseline(steps.current, baseline),
            }
        )
        reported = self.run("report", report_task, ReportRecord, run_dir=trained.run_dir,
                            facts=facts, store=self.store, run_prefix=_prefix(trained))  # fmt: skip
        decision = steps.decide(verdict)
        run_uri = None
        if self.store is not None:
            lineage = _lineage(self, converted, trained, metrics, exports)
            lineage["promotion"] = decision.to_json()
            run_uri = publish_run_task(self.store, _prefix(trained), trained.run_dir, lineage)[
                "uri"
            ]
        promotion = steps.record(decision, metrics, run_uri)
        made = (converted, trained, metrics, exports, reported)
        summary = _summary(self, *made, run_uri, promotion).model_dump(mode="json")
        get_run_logger().info("top-1 %.4f, top-5 %.4f; report %s", metrics.top1, metrics.top5,
                              reported.markdown)  # fmt: skip
        if not promotion["promoted"]:  # the run's state says so in the UI; nothing overwritten
            return Completed(name="Not promoted", message=promotion["reason"], data=summary)
        return summary


def _summary(pipe, converted, trained, metrics, exports, reported, run_uri, promotion):
    """What the flow returns (and the demo prints)."""
    return FlowSummary.model_validate(
        {
            "top1": metrics.top1,
            "top5": metrics.top5,
            "exports": [e.path for e in exports],
            "report": reported.markdown,
            "report_html": reported.html,
            "data_fingerprint": pipe.facts["data_fingerprint"],
            "mindrecord_fingerprint": converted.fingerprint,
            "export_checks": [
                {k: getattr(e, k) for k in ("format", "path", "verified_with", "max_abs_diff")}
                for e in exports
            ],
            "run_dir": trained.run_dir,
            "checkpoint": trained.final_checkpoint,
            "global_step": trained.global_step,
            "resumed_from_step": trained.resumed_from_step,
            "run_uri": run_uri,
            "timings": pipe.run.timings,
            **pipe.run.meter.totals(),
            "promotion": promotion,
        }
    )


def _baseline(current: Any, baseline: EvalRecord | None) -> dict[str, Any]:
    """The report's comparison: the model in service (on the candidate's images), if any."""
    if current is None or baseline is None:
        return {}
    return {"baseline": baseline.to_json(), "baseline_label": f"current model ({current.run_id})"}


def _lineage(pipe, converted, trained, metrics, exports) -> dict[str, Any]:
    """What ``run.json`` records: inputs, config, weights, exports and metrics of the run, each
    published output by its address."""
    run_id = Path(trained.run_dir).name
    return {
        "run_id": run_id,
        "source": pipe.params.source,
        "source_fingerprint": pipe.facts["data_fingerprint"],
        "mindrecord_fingerprint": converted.fingerprint,
        "mindrecord": converted.address.model_dump() if converted.address else None,
        "config": pipe.cfg,
        "checkpoint": {"key": f"{run_prefix(run_id)}/final.ckpt", "sha256": trained.final_sha256},
        "exports": [
            {
                "format": e.format,
                "key": f"{_prefix(e) or export_prefix(run_id, e.format)}/{Path(e.path).name}",
                "sha256": e.sha256,
            }
            for e in exports
        ],
        "metrics": {"top1": metrics.top1, "top5": metrics.top5, "count": metrics.count},
        "resumed_from_step": trained.resumed_from_step,
        "stack": trained.stack,
        "timings": pipe.run.timings,
        **pipe.run.meter.totals(),
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
