"""The promotion steps of ``train-eval-export``, wired: read the model in service, evaluate it on
the candidate's images when its own evaluation was on others (cached), let the gate judge, ask a
person when it cannot decide, and record the decision.

Wiring only: each step is a task in ``tasks/`` (the approval is the flow run's pause).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irv2_core.lineage import FileRef, ServiceRecord
from irv2_core.promotion.gate import Verdict, comparable
from irv2_core.promotion.render import verdict_markdown
from irv2_core.records import ConversionRecord, EvalRecord, TrainSummary
from irv2_core.storage.layout import rerun_prefix, run_prefix
from tasks import evaluate_task
from tasks.promotion import (
    current_model,
    gate_task,
    in_service_checkpoint,
    promote_task,
    request_approval,
)

__all__ = ["Decision", "PromotionSteps"]


@dataclass
class Decision:
    """What was decided about the candidate, by whom, and on which numbers."""

    verdict: Verdict
    outcome: str
    decided_by: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "decided_by": self.decided_by, "reason": self.reason,
                "gate": self.verdict.model_dump(mode="json")}  # fmt: skip


class PromotionSteps:
    """The promotion of one flow run's candidate; *pipe* is the flow's wiring context."""

    def __init__(self, pipe: Any, converted: ConversionRecord, trained: TrainSummary) -> None:
        self.pipe, self.converted, self.trained = pipe, converted, trained
        self.run_id = Path(trained.run_dir).name
        self.models = pipe.store or {"uri": str(pipe.work)}  # where the model in service is
        self.current, self.version = current_model(self.models)

    def baseline(self, candidate: EvalRecord) -> EvalRecord | None:
        """The model in service evaluated on the candidate's images: its own evaluation when it
        was, else a (cached) evaluation of its checkpoint on them; None when there is none."""
        current = self.current
        if current is None or current.run_id == self.run_id:
            return None
        if comparable(candidate, current.eval):
            return current.eval
        checkpoint = current.checkpoint or in_service_checkpoint(self.models, current)
        if checkpoint is None:  # its run is gone: the gate asks a person
            return current.eval
        pipe, fingerprint = self.pipe, self.converted.fingerprint
        name = f"evaluate-{pipe.cfg['eval_protocol']}-val-{fingerprint[:8]}"
        where = {"checkpoint": checkpoint.key, "run_prefix": None, "publish_prefix": None}
        if pipe.store is not None:  # a published run: fetched into <workdir>/runs/<run-id>
            local = pipe.work / "runs" / current.run_id
            where = {"checkpoint": str(local / "final.ckpt"),
                     "run_prefix": run_prefix(current.run_id),
                     "publish_prefix": rerun_prefix(current.run_id, name)}  # fmt: skip
        return pipe.run("evaluate-in-service", evaluate_task, EvalRecord, config=pipe.cfg,
                        out=str(pipe.work / "in-service" / current.run_id / name / "eval.json"),
                        checkpoint_sha256=checkpoint.sha256, store=pipe.store,
                        **pipe.mindrecord(self.converted), **where)  # fmt: skip

    def judge(self, candidate: EvalRecord, baseline: EvalRecord | None) -> Verdict:
        """The gate's verdict on the candidate."""
        current_run = self.current.run_id if self.current else None
        return gate_task(
            candidate, self.run_id, baseline, current_run, self.pipe.params.gate_rules()
        )

    def decide(self, verdict: Verdict) -> Decision:
        """The gate's outcome, or, when it asks, a person's (the flow run pauses for it)."""
        if verdict.outcome != "ask":
            return Decision(verdict, verdict.outcome, "rule", verdict.reason)
        timeout = self.pipe.params.approval_timeout_s
        outcome, who, reason = request_approval(verdict, self.run_id, timeout)
        return Decision(verdict, outcome, who, reason)

    def record(self, decision: Decision, candidate: EvalRecord, run_uri: str | None) -> dict:
        """Put the candidate in service when the decision says so (conditional write)."""
        trained, store = self.trained, self.pipe.store
        key = f"{run_prefix(self.run_id)}/final.ckpt" if store else str(trained.final_checkpoint)
        record = ServiceRecord(
            run_id=self.run_id,
            run_uri=run_uri or str(trained.run_dir),
            eval=candidate,
            checkpoint=FileRef(key=key, sha256=trained.final_sha256),
            decision=decision.outcome,
            decided_by=decision.decided_by,
            reason=decision.reason,
        )
        return promote_task(self.models, record, self.version, decision.outcome, decision.reason)

    def report_section(self, verdict: Verdict) -> str:
        return verdict_markdown(verdict, self.run_id)
