"""The model in service for a deployment: its record, its history, and every change to it
through one conditional write.

``models/<deployment>/current.json`` in the object store (or the workdir without one) names the
run in service, its evaluation (the next candidate's baseline), its checkpoint, who or what put
it there and why, and the history of every earlier change. A change is written only if the
record is still the version it was decided against: a run that lost a race, or a second approval
of the same candidate, never overwrites a newer decision.
"""

from __future__ import annotations

import json
import time

from irv2_core.errors import Irv2Error
from irv2_core.lineage import ServiceRecord
from irv2_core.storage.store import ObjectStore, StoredObject

__all__ = ["current_key", "promote", "read_current", "rollback"]


def current_key(deployment: str) -> str:
    """Where the record of *deployment*'s model in service lives in the store."""
    return f"models/{deployment}/current.json"


def read_current(store: ObjectStore, deployment: str) -> tuple[ServiceRecord | None, str | None]:
    """The model in service of *deployment* and the record's version (both None when none)."""
    head = store.head(current_key(deployment))
    data = store.get_bytes(current_key(deployment)) if head else None
    if not data:
        return None, None
    return ServiceRecord.model_validate(json.loads(data)), head.version


def promote(
    store: ObjectStore, deployment: str, record: ServiceRecord, version: str | None
) -> StoredObject | None:
    """Put *record* in service, only if the record is still *version* (None: there was none);
    None when another change came first (nothing is overwritten then). The model it replaces
    goes to the front of the history."""
    current = None
    if version is not None:
        current, now = read_current(store, deployment)
        if now != version:
            return None
    history = ([current.change()] + current.history) if current else []
    record = record.model_copy(update={"promoted_at": time.time(), "history": history})
    data = json.dumps(record.file_content(), indent=2, sort_keys=True).encode()
    return store.create(data, current_key(deployment), replace=version)


def rollback(
    store: ObjectStore, deployment: str, run_id: str | None = None, by: str = "person"
) -> ServiceRecord:
    """Put an earlier model back in service (the previous one, or *run_id* from the history),
    through the same conditional write; return the new record. Raises Irv2Error when there is
    nothing to roll back to, or another change came first."""
    current, version = read_current(store, deployment)
    if current is None or not current.history:
        raise Irv2Error(f"{deployment}: no earlier model in the history to roll back to")
    earlier = current.history[0] if run_id is None else current.find(run_id)
    if earlier is None:
        known = ", ".join(c.run_id for c in current.history)
        raise Irv2Error(f"{deployment}: {run_id} is not in the history (it holds: {known})")
    record = ServiceRecord.model_validate(
        {
            **earlier.model_dump(),
            "decided_by": by,
            "decision": "rollback",
            "reason": f"rolled back from {current.run_id}",
        }  # fmt: skip
    )
    if promote(store, deployment, record, version) is None:
        raise Irv2Error(f"{deployment}: the model in service changed meanwhile; try again")
    return read_current(store, deployment)[0]
