"""Prefect task for ``report``: the pure report builder plus keyed artifacts in the Prefect UI.

Not cached: it is cheap, and its timings table must describe the run that just happened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from irv2_core.records import PipelineFacts
from irv2_core.report import PIPELINE_FILE, artifact_markdown, build_report
from irv2_core.runtime.io import atomic_write_json
from irv2_core.storage.publish import SMALL_RUN_FILES, StoreRef, ensure_local, open_ref
from tasks.common import PERSIST

__all__ = ["report_task"]

_TABLE_ARTIFACTS = ("final_metrics", "exports", "timings")


@task(name="report", retries=1, retry_delay_seconds=5, **PERSIST)
def report_task(
    run_dir: str,
    facts: PipelineFacts | dict[str, Any],
    out_dir: str | None = None,
    store: StoreRef | None = None,
    run_prefix: str | None = None,
) -> dict[str, Any]:
    """Write the report of *run_dir* with the pipeline *facts*; publish it as artifacts.

    *facts* (evaluation, exports, data_fingerprint, timings, baseline) is saved as the run folder's
    ``pipeline.json`` first, so ``irv2 report RUN_DIR`` later rebuilds the same report. With
    *out_dir* (a rerun), the facts and the report go there instead and the run folder's own
    files are left as they are. With a *store*, the run's small files (config, metrics, ...) are
    fetched from *run_prefix* first: this worker may hold none of them (every stage was cached).
    Returns the ReportRecord (without its tables) as a JSON dict.
    """
    logger = get_run_logger()
    if run_prefix is not None:
        ensure_local(open_ref(store), run_prefix, Path(run_dir), only=SMALL_RUN_FILES)
    facts = PipelineFacts.model_validate(facts)
    if out_dir is None:
        atomic_write_json(Path(run_dir) / PIPELINE_FILE, facts.file_content())
        result = build_report(run_dir)
    else:
        atomic_write_json(Path(out_dir) / PIPELINE_FILE, facts.file_content())
        result = build_report(run_dir, Path(out_dir) / "report", extra=facts.file_content())
    # the plots travel inside the artifact (data URIs): the UI cannot load the worker's files
    create_markdown_artifact(
        markdown=artifact_markdown(result), key="irv2-report", description=f"report of {run_dir}"
    )
    for name in _TABLE_ARTIFACTS:
        rows = result.tables.get(name) or []
        if rows:
            create_table_artifact(
                table=rows, key=f"irv2-{name.replace('_', '-')}", description=name
            )
    logger.info("report: %s", result.markdown)
    return result.to_json()
