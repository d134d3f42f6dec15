"""Thin Prefect task adapters over ``irv2_core``: one task per stage.

Each task calls the stage function, logs through Prefect's run logger, and returns a small
JSON-safe dict persisted with the JSON serializer. Cache keys are content-based and verify the
stamped outputs (``tasks.caching``).
"""

from __future__ import annotations

from tasks.data import convert_task, stage_task
from tasks.model import evaluate_task, export_options, export_task
from tasks.reporting import report_task
from tasks.training import train_task

__all__ = [
    "convert_task",
    "evaluate_task",
    "export_options",
    "export_task",
    "report_task",
    "stage_task",
    "train_task",
]
