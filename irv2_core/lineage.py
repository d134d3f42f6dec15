"""Typed records of what the flow publishes and returns beyond the stage records: a published
run's ``run.json`` (:class:`RunRecord`), the model in service (:class:`ServiceRecord`) and the
flow's own result (:class:`FlowSummary`). Like ``irv2_core.records``, only pydantic and the
standard library are imported here, so any layer may use them.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from irv2_core.records import Address, EvalRecord, Item, Record, StageTiming

__all__ = [
    "LINEAGE_RECORDS",
    "AliasBook",
    "ExportCheck",
    "ExportRef",
    "FileRef",
    "FlowSummary",
    "Promotion",
    "RunMetrics",
    "RunRecord",
    "ServiceEntry",
    "ServiceRecord",
]


class FileRef(Item):
    """One published file: its key under the store root and its sha256."""

    key: str
    sha256: str | None = None


class ExportRef(FileRef):
    format: str = Field(description="MINDIR, ONNX or AIR")


class RunMetrics(Item):
    top1: float
    top5: float
    count: int


class RunRecord(Record):
    """``runs/<run-id>/run.json``: a published run's lineage, written last (it completes the
    run). Read back by reruns, ``irv2 pull`` and ``irv2 store show``."""

    run_id: str
    source: str = Field(description="the flow's `source`")
    source_fingerprint: str = Field(description="the staged data's (`data_fingerprint`)")
    mindrecord_fingerprint: str
    mindrecord: Address | None = Field(
        default=None, description="where the conversion it trained on is published"
    )
    config: dict[str, Any] = Field(description="the resolved config")
    checkpoint: FileRef = Field(description="`final.ckpt`")
    exports: list[ExportRef] = Field(default_factory=list)
    metrics: RunMetrics
    resumed_from_step: int = 0
    stack: dict[str, str | None] | None = Field(
        default=None, description="the software stack it trained on (`runtime.stack`)"
    )
    timings: dict[str, StageTiming] = Field(
        default_factory=dict, description="each stage's seconds, state and device-hours"
    )
    device_hours: float | None = Field(default=None, description="the stages' total so far")
    cost: float | None = Field(default=None, description="from the rate card; null without one")
    currency: str | None = None
    promotion: dict[str, Any] | None = Field(
        default=None, description="the decision: outcome, decided_by, reason and the gate's numbers"
    )
    code_version: str = Field(description="`training_code_version()` of the code that trained")
    flow_run_id: str = Field(default="", description="the Prefect flow run that published it")
    published_at: float = Field(description="Unix time")
    uri: str = Field(description="`<output_uri>/runs/<run-id>`")


class ServiceEntry(Record):
    """One model's time in service: the run, its evaluation and checkpoint, and the decision."""

    run_id: str
    run_uri: str = Field(description="the published run (or its folder, without a store)")
    eval: EvalRecord = Field(description="its evaluation, the baseline of the next candidate")
    checkpoint: FileRef | None = Field(
        default=None, description="its `final.ckpt` (key in the store, or the local path)"
    )
    flow_run_id: str = ""
    promoted_at: float | None = Field(default=None, description="Unix time")
    decision: str = Field(
        default="promote",
        description="`promote`, `approve`, `rollback`, `manual` (by hand); `reject` (a challenger)",
    )
    decided_by: str = Field(default="rule", description="`rule`, or who approved or rolled back")
    reason: str = Field(default="", description="the gate's sentence, or the person's comment")

    def entry(self) -> ServiceEntry:
        """A plain entry of this model, without per-image outcomes (only the gate's baseline,
        the model in service, keeps them) or a record's history."""
        entry = ServiceEntry.model_validate(self.model_dump(exclude={"history"}))
        entry.eval = entry.eval.model_copy(update={"per_image": None})
        return entry


class ServiceRecord(ServiceEntry):
    """``models/<deployment>/current.json``: the model in service, with every earlier one."""

    history: list[ServiceEntry] = Field(
        default_factory=list, description="the models in service before, newest first"
    )

    def change(self) -> ServiceEntry:
        """This record as a history entry (its per-image outcomes left out: they are only the
        baseline of the model in service)."""
        return self.entry()

    def find(self, run_id: str) -> ServiceEntry | None:
        """The newest history entry of *run_id*, if any."""
        return next((e for e in self.history if e.run_id == run_id), None)


class AliasBook(Record):
    """``models/<deployment>/aliases.json``: named models of a deployment besides the one in
    service (which is always ``champion``, the record in ``current.json``)."""

    aliases: dict[str, ServiceEntry] = Field(
        default_factory=dict, description="alias -> the model it names (`challenger`, ...)"
    )


class Promotion(Item):
    promoted: bool
    outcome: str = Field(description="`promote`, `approve` or `reject`")
    reason: str = Field(description="the gate's sentence, or the person's comment")
    deployment: str


class ExportCheck(Item):
    format: str
    path: str
    verified_with: str
    max_abs_diff: float | None = None


class FlowSummary(Item):
    """What ``train-eval-export`` returns (its result in the UI; ``irv2 demo`` prints it)."""

    top1: float
    top5: float
    exports: list[str] = Field(description="the export files")
    report: str = Field(description="report.md")
    report_html: str
    device_hours: float | None = Field(default=None, description="every stage's, in total")
    cost: float | None = Field(default=None, description="from the rate card; null without one")
    currency: str | None = None
    data_fingerprint: str
    mindrecord_fingerprint: str
    export_checks: list[ExportCheck]
    run_dir: str
    checkpoint: str = Field(description="`final.ckpt`")
    global_step: int
    resumed_from_step: int
    run_uri: str | None = Field(description="the published run (null without `output_uri`)")
    timings: dict[str, StageTiming]
    promotion: Promotion


LINEAGE_RECORDS = (RunRecord, ServiceRecord, AliasBook, FlowSummary)
