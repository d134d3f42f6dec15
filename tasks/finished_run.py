"""Prefect tasks that read a finished, published run from the object store for a rerun.

Reads of the store are tasks, not flow code: retried on transient network errors and visible in
the UI. Nothing here is cached: a rerun must see the store as it is now.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from irv2_core.lineage import RunRecord
from irv2_core.storage.publish import StoreRef, ensure_local, open_ref
from irv2_core.storage.pull import find_conversion, read_run_record
from tasks.common import retry_transient_only

__all__ = ["conversion_prefix_task", "fetch_task", "read_run_task"]

_READ = {
    "retries": 2,
    "retry_delay_seconds": 5,
    "retry_condition_fn": retry_transient_only,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}


@task(name="read-run", **_READ)
def read_run_task(store: StoreRef, run_key: str, run_dir: str, files: list[str]) -> RunRecord:
    """The run.json of the published run at *run_key*, with *files* of it fetched (verified)
    into *run_dir*. Fails, naming the URI, when the run is not completely published."""
    st = open_ref(store)
    record, _ = read_run_record(st, run_key)
    ensure_local(st, run_key, Path(run_dir), only=files)
    return record


@task(name="fetch", **_READ)
def fetch_task(store: StoreRef, prefix: str, folder: str, only: list[str]) -> str:
    """*only* these committed files of *prefix* in *folder* (verified); returns the folder."""
    return str(ensure_local(open_ref(store), prefix, Path(folder), only=only))


@task(name="find-conversion", **_READ)
def conversion_prefix_task(store: StoreRef, record: RunRecord) -> str | None:
    """The store prefix of the MindRecord conversion the run (its run.json *record*) trained on:
    the address run.json names, else (a run.json written before runs named it) the committed
    conversion with the run's MindRecord fingerprint, if any."""
    if record.mindrecord is not None:
        return record.mindrecord.prefix
    return find_conversion(open_ref(store), record.mindrecord_fingerprint)
