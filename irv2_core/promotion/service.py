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
from pathlib import Path

from irv2_core.errors import Irv2Error
from irv2_core.lineage import FileRef, ServiceEntry, ServiceRecord
from irv2_core.storage.layout import run_prefix
from irv2_core.storage.pull import read_run_record
from irv2_core.storage.stamps import file_digest
from irv2_core.storage.store import ObjectStore, StoredObject

__all__ = ["checkpoint_of", "current_key", "promote", "read_current"]


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


def checkpoint_of(store: ObjectStore, entry: ServiceEntry) -> FileRef | None:
    """The checkpoint of a model in service: the one its record names, or for a record from an
    older release that names none, the ``final.ckpt`` of its run (as its ``run.json`` in the
    store names it, or in its run folder without a store); None when that run is gone."""
    if entry.checkpoint is not None:
        return entry.checkpoint
    try:
        return read_run_record(store, run_prefix(entry.run_id))[0].checkpoint
    except Irv2Error:
        pass  # not published there: a run folder of a flow without output_uri
    path = Path(entry.run_uri) / "final.ckpt"
    return FileRef(key=str(path), sha256=file_digest(path)) if path.is_file() else None
