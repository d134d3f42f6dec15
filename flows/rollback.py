"""The ``rollback`` flow: put an earlier model back in service for a deployment, from the Prefect
UI or a schedule, through the same conditional write a promotion makes (``irv2 models rollback``
does the same from a shell)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from tasks.promotion import rollback_task

__all__ = ["rollback_model"]


@flow(name="rollback", log_prints=True)
def rollback_model(
    deployment: str,
    to_run: str | None = None,
    output_uri: str | None = None,
    endpoint_url: str | None = None,
    workdir: str = "./irv2-work",
    by: str = "the rollback flow",
) -> dict[str, Any]:
    """Put the model *deployment* had before (or the run *to_run* of its history) back in
    service; the models live in *output_uri* (or *workdir* without one). *by* is recorded."""
    models = {"uri": output_uri, "endpoint_url": endpoint_url} if output_uri else None
    models = models or {"uri": str(Path(workdir).expanduser().resolve())}
    return rollback_task(models, deployment, to_run, by)
