"""Prefect tasks for the promotion gate: read the model in service, judge the candidate, ask a
person when the gate cannot decide, and record the decision.

The rules and the record live in ``irv2_core.promotion``. The approval is a pause of the flow run
(``pause_flow_run`` with a typed input): the Prefect UI shows the comparison above a form
(approve, comment, reviewer); the run resumes with what was entered, or is rejected when no one
decides within the timeout. Every change to the model in service is a conditional write against
the version the decision was made on, so two approvals racing give one decision.
"""

from __future__ import annotations

import math
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment, flow_run
from prefect.states import Running

from irv2_core.lineage import FileRef, ServiceRecord
from irv2_core.promotion import (
    CHALLENGER,
    GateRules,
    Verdict,
    decide,
    promote,
    read_current,
    rollback,
    set_alias,
)
from irv2_core.promotion.render import verdict_markdown
from irv2_core.promotion.service import checkpoint_of
from irv2_core.records import EvalRecord
from irv2_core.storage.publish import StoreRef, open_ref

__all__ = [
    "Approval",
    "current_model",
    "deployment_name",
    "gate_task",
    "in_service_checkpoint",
    "promote_task",
    "request_approval",
    "rollback_task",
]

_NOW = {"cache_policy": NO_CACHE, "persist_result": False}  # always the store as it is now


def deployment_name() -> str:
    """The deployment this flow run belongs to (``default`` when run without one)."""
    return deployment.name or "default"


@task(name="current-model", retries=2, retry_delay_seconds=5, **_NOW)
def current_model(models: StoreRef) -> tuple[ServiceRecord | None, str | None]:
    """The model in service for this deployment and the record's version (None, None: none)."""
    return read_current(open_ref(models), deployment_name())


@task(name="in-service-checkpoint", retries=2, retry_delay_seconds=5, **_NOW)
def in_service_checkpoint(models: StoreRef, current: ServiceRecord) -> FileRef | None:
    """The checkpoint of the model in service, found through its run when its record is from a
    release that did not name it (None: that run is gone)."""
    return checkpoint_of(open_ref(models), current)


@task(name="gate", **_NOW)
def gate_task(
    candidate: EvalRecord, run_id: str, current: EvalRecord | None, current_run: str | None,
    rules: GateRules,
) -> Verdict:  # fmt: skip
    """The gate's verdict on the candidate (see ``irv2_core.promotion.gate``), also shown as the
    run's ``irv2-promotion`` Markdown artifact (the comparison a person decides on)."""
    verdict = decide(candidate, run_id, current, current_run, rules)
    get_run_logger().info("gate: %s (%s)", verdict.outcome, verdict.reason)
    create_markdown_artifact(key="irv2-promotion", markdown=verdict_markdown(verdict, run_id),
                             description=f"promotion of {run_id}: {verdict.outcome}")  # fmt: skip
    return verdict


class Approval(RunInput):
    """What a person enters in the Prefect UI to decide a candidate."""

    approve: bool = False
    comment: str = ""
    reviewer: str = ""


def request_approval(verdict: Verdict, run_id: str, timeout_s: float) -> tuple[str, str, str]:
    """Pause this flow run until a person approves or rejects *run_id* in the UI; returns
    ``(outcome, decided_by, reason)``. Called from the flow (a pause is the flow's, not a
    task's). No decision within *timeout_s*: rejected, and the run goes on to record that."""
    logger = get_run_logger()
    form = Approval.with_initial_data(description=verdict_markdown(verdict, run_id))
    logger.warning("promotion of %s needs a decision in the UI within %g s", run_id, timeout_s)
    poll_s = min(10.0, max(1.0, timeout_s / 20))
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=math.ceil(timeout_s),
                                poll_interval=poll_s)  # fmt: skip
    except FlowPauseTimeout:
        # the server would fail any later state of an expired pause ("... and never resumed"):
        # the run is set running again, so it can record the rejection and end as it should
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run.get_id(), Running(message="no decision in time"),
                                      force=True)  # fmt: skip
        return "reject", "timeout", f"no decision within {timeout_s:g} s: not promoted"
    who = answer.reviewer.strip() or "a person in the Prefect UI"
    comment = answer.comment.strip() or "(no comment)"
    return ("approve" if answer.approve else "reject"), who, comment


@task(name="promote", retries=2, retry_delay_seconds=5, **_NOW)
def promote_task(
    models: StoreRef, record: ServiceRecord, version: str | None, outcome: str, reason: str
) -> dict[str, Any]:
    """Put *record* in service when *outcome* is promote or approve, only if the record is
    still *version*; else name it the deployment's ``challenger``. Returns ``{promoted,
    outcome, reason, deployment}``."""
    logger, name = get_run_logger(), deployment_name()
    promoted = outcome in ("promote", "approve")
    current, _ = read_current(open_ref(models), name)
    record = record.model_copy(update={"flow_run_id": str(flow_run.get_id() or "")})
    in_service = current is not None and current.run_id == record.run_id
    if promoted and not in_service and promote(open_ref(models), name, record, version) is None:
        promoted, outcome = False, "reject"
        reason = "not promoted: the model in service changed during this run"
    # the newest candidate not put in service is the challenger; once one is, none is
    decided = record.model_copy(update={"decision": outcome, "reason": reason})
    set_alias(open_ref(models), name, CHALLENGER, None if promoted else decided)
    (logger.info if promoted else logger.warning)("%s: %s: %s", name, outcome, reason)
    return {"promoted": promoted, "outcome": outcome, "reason": reason, "deployment": name}


@task(name="rollback", retries=2, retry_delay_seconds=5, **_NOW)
def rollback_task(models: StoreRef, name: str, to_run: str | None, by: str) -> dict[str, Any]:
    """Put an earlier model of deployment *name* back in service; its new record as JSON."""
    record = rollback(open_ref(models), name, to_run, by=by)
    get_run_logger().warning("%s: %s is in service again (%s)", name, record.run_id, record.reason)
    return record.model_dump(mode="json", exclude={"eval": {"per_image"}})
