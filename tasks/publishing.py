"""Prefect task that completes a published run: its report and, written last, ``run.json``.

``run.json`` ties the lineage together — source and MindRecord fingerprints, the resolved config,
the code version, the checkpoint's and every export's sha256 and key, the metrics and the Prefect
flow run — and, being written last, marks the whole run as complete in the store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from irv2_core.lineage import RunRecord
from irv2_core.runtime.fingerprint import training_code_version
from irv2_core.storage.layout import RUN_RECORD, report_prefix
from irv2_core.storage.outputs import publish
from irv2_core.storage.publish import StoreRef, folder_files, open_ref
from irv2_core.storage.store import join_key
from tasks.common import retry_transient_only

__all__ = ["check_writable_task", "publish_folder_task", "publish_run_task"]


@task(name="check-store", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient_only)  # fmt: skip
def check_writable_task(store: StoreRef) -> None:
    """Preflight: fail before any stage when the flow's ``output_uri`` does not take writes."""
    open_ref(store).check_writable()


@task(name="publish", retries=2, retry_delay_seconds=5)
def publish_run_task(
    store: StoreRef, run_prefix: str, run_dir: str, lineage: dict[str, Any]
) -> dict[str, Any]:
    """Publish the run's report folder, then its ``run.json`` (*lineage* plus the code version
    and this flow run); return the run record."""
    logger = get_run_logger()
    st = open_ref(store)
    report_dir = Path(run_dir) / "report"
    publish(st, report_prefix(Path(run_prefix).name), folder_files(report_dir), digest="report")
    record = RunRecord.model_validate(
        {
            **lineage,
            "code_version": training_code_version(),
            "flow_run_id": str(flow_run.get_id() or ""),
            "published_at": time.time(),
            "uri": f"{st.uri}/{run_prefix}",
        }
    )
    data = json.dumps(record.file_content(), indent=2, sort_keys=True).encode()
    st.put_bytes(data, join_key(run_prefix, RUN_RECORD))
    logger.info("published run %s", record.uri)
    return record.to_json()


@task(name="publish", retries=2, retry_delay_seconds=5)
def publish_folder_task(store: StoreRef, prefix: str, folder: str, digest: str) -> str:
    """Publish every file of *folder* under *prefix* (commit marker last); return its URI."""
    st = open_ref(store)
    publish(st, prefix, folder_files(Path(folder)), digest=digest)
    uri = f"{st.uri}/{prefix}"
    get_run_logger().info("published %s", uri)
    return uri
