"""Whether a newly trained model replaces the one in service: the promotion rule and its record.

The model in service for a deployment is named by a small record, ``models/<deployment>/
current.json`` in the object store (or the workdir without one): the run it came from and that
run's evaluation. A candidate is promoted unless its top-1 is more than ``max_top1_drop`` points
below the current model's on the same validation split; a rejected candidate never overwrites it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from irv2_core.records import EvalRecord
from irv2_core.storage.store import ObjectStore, StoredObject

__all__ = ["Decision", "current_key", "decide", "promote", "read_current"]


def current_key(deployment: str) -> str:
    """Where the record of *deployment*'s model in service lives in the store."""
    return f"models/{deployment}/current.json"


@dataclass(frozen=True)
class Decision:
    """The outcome for a candidate: promoted or not, and why, in one sentence."""

    promoted: bool
    reason: str


def decide(
    candidate: EvalRecord, run_id: str, current: dict[str, Any] | None, max_top1_drop: float
) -> Decision:
    """Apply the rule: no current model, the same run, or top-1 within *max_top1_drop* points."""
    if current is None:
        return Decision(True, "no model in service yet: this one becomes the current model")
    if current.get("run_id") == run_id:
        return Decision(True, f"{run_id} is already the current model")
    old = EvalRecord.model_validate(current["eval"])
    delta = (candidate.top1 - old.top1) * 100
    verdict = (
        f"top-1 {candidate.top1 * 100:.2f} % vs the current model's {old.top1 * 100:.2f} % "
        f"({delta:+.2f} points; allowed drop {max_top1_drop:g})"
    )
    if delta < -max_top1_drop:
        return Decision(False, f"not promoted: {verdict}; {current.get('run_id')} stays current")
    return Decision(True, f"promoted: {verdict}")


def read_current(store: ObjectStore, deployment: str) -> tuple[dict[str, Any] | None, str | None]:
    """The current-model record of *deployment* and its version (both None when there is none)."""
    head = store.head(current_key(deployment))
    data = store.get_bytes(current_key(deployment)) if head else None
    return (json.loads(data), head.version) if data else (None, None)


def promote(
    store: ObjectStore, deployment: str, record: dict[str, Any], version: str | None
) -> StoredObject | None:
    """Make *record* the current model, only if the current one is still *version* (None: there
    was none); None when another run changed it meanwhile (nothing is overwritten then)."""
    data = json.dumps({**record, "promoted_at": time.time()}, indent=2, sort_keys=True).encode()
    return store.create(data, current_key(deployment), replace=version)
