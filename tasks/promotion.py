"""Prefect task for the promotion gate: does the new model replace the one in service?

The rule and the record live in ``irv2_core.promotion``; this task applies them for the flow's
deployment and writes the new current-model record only when the candidate is promoted (with a
conditional write, so a run that lost a race never overwrites a newer decision).
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import deployment, flow_run

from irv2_core.promotion import Decision, decide, promote, read_current
from irv2_core.records import EvalRecord
from irv2_core.storage.publish import StoreRef, open_ref

__all__ = ["deployment_name", "promote_task", "current_model"]


def deployment_name() -> str:
    """The deployment this flow run belongs to (``default`` when run without one)."""
    return deployment.name or "default"


@task(name="current-model", retries=2, retry_delay_seconds=5)
def current_model(models: StoreRef) -> dict[str, Any] | None:
    """The record of the model in service for this deployment, or None (the report's baseline;
    the promote task reads it again, conditionally)."""
    return read_current(open_ref(models), deployment_name())[0]


@task(name="promote")
def promote_task(
    models: StoreRef, run_id: str, evaluation: dict[str, Any], run_uri: str, max_top1_drop: float
) -> dict[str, Any]:
    """Promote the run *run_id* (its *evaluation*) unless it is worse than the current model by
    more than *max_top1_drop* top-1 points; return ``{promoted, reason, deployment}``."""
    logger = get_run_logger()
    store, name = open_ref(models), deployment_name()
    current, version = read_current(store, name)
    candidate = EvalRecord.model_validate(evaluation)
    decision = decide(candidate, run_id, current, max_top1_drop)
    is_new = current is None or current.get("run_id") != run_id
    if decision.promoted and is_new:
        record = {"run_id": run_id, "run_uri": run_uri, "eval": candidate.to_json(),
                  "flow_run_id": str(flow_run.get_id() or "")}  # fmt: skip
        if promote(store, name, record, version) is None:
            decision = Decision(False, "not promoted: the current model changed during this run")
    (logger.info if decision.promoted else logger.warning)("%s: %s", name, decision.reason)
    return {"promoted": decision.promoted, "reason": decision.reason, "deployment": name}
