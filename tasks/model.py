"""Prefect tasks for ``evaluate`` and ``export``, keyed on the checkpoint's sha256 plus options.

Both run in the flow's process (they compile one graph each) and return their stage record
(``EvalRecord``, ``ExportRecord``) as a JSON dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from irv2_core.records import EvalRecord, ExportRecord
from irv2_core.runtime.io import read_json
from tasks.caching import cache_key, current_cache_key, file_digest, write_stamp
from tasks.common import PERSIST, for_record, retry_unless_user_error

__all__ = ["evaluate_task", "export_task"]

_EVAL_KEYS = ("eval_protocol", "image_size", "eval_batch_size", "num_classes", "device_target")


def _eval_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    config = params["config"]
    content = {
        "task": "evaluate",
        "checkpoint": file_digest(params["checkpoint"]),
        "data_fingerprint": params["data_fingerprint"],
        "options": {k: config.get(k) for k in _EVAL_KEYS},
        "split": params.get("split", "val"),
        "out": str(params["out"]),
    }
    return for_record(cache_key(params["out"], content), EvalRecord)


@task(
    name="evaluate",
    cache_key_fn=_eval_key,
    retries=1,
    retry_condition_fn=retry_unless_user_error,
    **PERSIST,
)
def evaluate_task(
    checkpoint: str,
    data_dir: str,
    data_fingerprint: str,
    config: dict[str, Any],
    out: str,
    split: str = "val",
) -> dict[str, Any]:
    """top-1/top-5 of *checkpoint* on *split* of the MindRecord folder; written to *out* too."""
    from irv2_core.config import Config
    from irv2_core.evaluation import evaluate

    logger = get_run_logger()
    result = evaluate(checkpoint, data_dir, cfg=Config(**config), split=split, out=out)
    logger.info(
        "%s: top-1 %.4f, top-5 %.4f on %s images (%s protocol)",
        split,
        result.top1,
        result.top5,
        result.count,
        result.protocol,
    )
    write_stamp(out, current_cache_key(), [out])
    return result.to_json()


def _export_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    content = {
        "task": "export",
        "checkpoint": file_digest(params["checkpoint"]),
        "format": params["fmt"],
        "options": params["options"],
        "out": str(params["out"]),
    }
    return for_record(cache_key(params["out"], content), ExportRecord)


@task(
    name="export",
    task_run_name="export-{fmt}",
    cache_key_fn=_export_key,
    retries=1,
    retry_condition_fn=retry_unless_user_error,
    **PERSIST,
)
def export_task(checkpoint: str, fmt: str, out: str, options: dict[str, Any]) -> dict[str, Any]:
    """Export *checkpoint* as *fmt* to *out* (verified by the export stage); return its record.

    *options* holds ``num_classes``, ``image_size`` and ``residual_bias``.
    """
    from irv2_core.export.exporter import export_model

    logger = get_run_logger()
    target = Path(out)
    record = export_model(checkpoint, fmt, str(target), **options)
    logger.info(
        "%s: %s (%s bytes, sha256 %s, verified with %s, max |diff| %s)",
        fmt,
        record.path,
        record.bytes,
        record.sha256,
        record.verified_with,
        record.max_abs_diff,
    )
    write_stamp(target, current_cache_key(), [record.path])
    return record.to_json()


def export_options(run_dir: str, config: dict[str, Any]) -> dict[str, Any]:
    """export_model keyword options for a trained run (class count from its classes.json)."""
    classes = read_json(Path(run_dir) / "classes.json")
    return {
        "num_classes": len(classes),
        "image_size": config["image_size"],
        "residual_bias": config.get("residual_bias", True),
    }
