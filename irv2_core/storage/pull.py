"""``irv2 pull``: bring a published run (weights, config, metrics, evaluation, report, exports)
from the object store to a local folder, every file verified against what was published.

The folder it fills works as a run folder: ``irv2 evaluate --ckpt DEST/final.ckpt``,
``irv2 predict --model DEST/final.ckpt`` (classes.json beside it) or
``irv2 predict --model DEST/exports/irv2.onnx --classes DEST/classes.json``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from irv2_core.errors import Irv2Error
from irv2_core.lineage import RunRecord
from irv2_core.runtime.io import atomic_write_bytes
from irv2_core.storage.layout import MINDRECORD, RUN_RECORD
from irv2_core.storage.publish import COMMIT_MARKER, fetch_committed, read_commit
from irv2_core.storage.store import ObjectStore, join_key

__all__ = ["find_conversion", "pull_run", "read_run_record", "split_run_uri"]


def read_run_record(root: ObjectStore, run_key: str) -> tuple[RunRecord, bytes]:
    """The ``run.json`` of the run at *run_key*, parsed and raw. Raises Irv2Error when the run
    is not completely published or its run.json is not one."""
    data = root.get_bytes(join_key(run_key, RUN_RECORD))
    if data is None or read_commit(root, run_key) is None:
        raise Irv2Error(
            f"{root.uri}/{run_key} is not a completely published run (no {RUN_RECORD} or commit "
            "marker): give the URI of a run that finished, e.g. s3://bucket/prefix/runs/run-…"
        )
    try:
        return RunRecord.model_validate_json(data), data
    except ValidationError as exc:
        raise Irv2Error(f"{root.uri}/{run_key}/{RUN_RECORD} is not a run record: {exc}") from None


def pull_run(root: ObjectStore, run_key: str, dest: Path) -> RunRecord:
    """Fetch the run at *run_key* (``runs/<run-id>`` under the store *root*) into *dest*;
    return its ``run.json``. Raises Irv2Error when the run is not completely published."""
    record, data = read_run_record(root, run_key)
    fetch_committed(root, run_key, dest)
    for sub in ("eval", "report"):
        if read_commit(root, join_key(run_key, sub)) is not None:
            fetch_committed(root, join_key(run_key, sub), dest if sub == "eval" else dest / sub)
    for export in record.exports:  # each with its input contract (<file>.json)
        fetch_committed(root, str(Path(export.key).parent), dest / "exports")
    atomic_write_bytes(dest / RUN_RECORD, data)
    return record


def split_run_uri(uri: str) -> tuple[str, str]:
    """``(store root URI, run key)`` of ``<root>/runs/<run-id>``."""
    head, sep, run_id = uri.rstrip("/").rpartition("/runs/")
    if not sep or not run_id or "/" in run_id:
        raise Irv2Error(f"expected <output_uri>/runs/<run-id>, got {uri!r}")
    return head, f"runs/{run_id}"


def find_conversion(root: ObjectStore, fingerprint: str) -> str | None:
    """The committed ``mindrecord/<digest>`` prefix whose conversion has *fingerprint*, if any:
    for a ``run.json`` written before runs named their conversion by address (``mindrecord``)."""
    markers = [o.key for o in root.list(f"{MINDRECORD}/") if o.key.endswith(COMMIT_MARKER)]
    for key in sorted(markers):
        prefix = key.removesuffix(f"/{COMMIT_MARKER}")
        marker = read_commit(root, prefix) or {}
        if (marker.get("meta", {}).get("record") or {}).get("fingerprint") == fingerprint:
            return prefix
    return None
