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
from irv2_core.runtime.io import sha256_json
from irv2_core.storage.layout import eval_prefix, export_prefix
from tasks.caching import (
    cache_key,
    current_cache_key,
    file_digest,
    store_cache_key,
    write_stamp,
)
from tasks.common import PERSIST, for_record, retry_unless_user_error
from tasks.data import ensure_mindrecord
from tasks.storage import StoreRef, committed_record, ensure_local, open_ref, publish

__all__ = ["evaluate_task", "export_prefix", "export_task"]

_EVAL_KEYS = ("eval_protocol", "image_size", "eval_batch_size", "num_classes", "device_target")


def _checkpoint_digest(params: dict[str, Any]) -> str:
    return params.get("checkpoint_sha256") or file_digest(params["checkpoint"])


def _eval_target(run_prefix: str, publish_prefix: str | None) -> str:
    """Where an evaluation is published: the rerun's own prefix, else the run's ``eval/``."""
    return publish_prefix or eval_prefix(Path(run_prefix).name)


def _export_target(run_prefix: str, fmt: str, publish_prefix: str | None) -> str:
    """Where an export is published: the rerun's own prefix, else ``exports/<run-id>/<fmt>``."""
    return publish_prefix or export_prefix(Path(run_prefix).name, fmt)


def _eval_content(params: dict[str, Any]) -> dict[str, Any]:
    config = params["config"]
    return {
        "task": "evaluate",
        "checkpoint": _checkpoint_digest(params),
        "data_fingerprint": params["data_fingerprint"],
        "options": {k: config.get(k) for k in _EVAL_KEYS},
        "split": params.get("split", "val"),
    }


def _eval_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    content = _eval_content(params)
    if store := open_ref(params.get("store")):
        prefix = _eval_target(params["run_prefix"], params.get("publish_prefix"))
        return store_cache_key(ctx, store, prefix, content, EvalRecord)
    content["out"] = str(params["out"])
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
    checkpoint_sha256: str | None = None,
    store: StoreRef | None = None,
    run_prefix: str | None = None,
    data_prefix: str | None = None,
    publish_prefix: str | None = None,
) -> dict[str, Any]:
    """top-1/top-5 of *checkpoint* on *split* of the MindRecord folder; written to *out* too.

    With a *store*, eval.json is published under *publish_prefix* (default: the run's ``eval/``;
    a rerun passes its own prefix so the run's evaluation is never replaced)."""
    from irv2_core.config import Config
    from irv2_core.evaluation import evaluate

    logger = get_run_logger()
    st = open_ref(store)
    if st is not None:
        params = dict(checkpoint=checkpoint, checkpoint_sha256=checkpoint_sha256,
                      data_fingerprint=data_fingerprint, config=config, split=split)  # fmt: skip
        digest = sha256_json(_eval_content(params))
        prefix = _eval_target(run_prefix, publish_prefix)
        if (found := committed_record(st, prefix, digest)) is not None:
            return EvalRecord.model_validate({**found, "checkpoint": checkpoint}).to_json()
        _ensure_checkpoint(st, run_prefix, checkpoint)
        ensure_mindrecord(st, data_prefix, Path(data_dir), data_fingerprint)
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
    if st is not None:
        publish(st, prefix, {"eval.json": Path(out)}, digest, record=result.to_json())
    return result.to_json()


def _ensure_checkpoint(store: Any, run_prefix: str, checkpoint: str) -> None:
    """The run's final.ckpt on this worker (fetched and verified when it is not here)."""
    path = Path(checkpoint)
    if not path.is_file():
        ensure_local(store, run_prefix, path.parent, only=[path.name])


def _export_content(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": "export",
        "checkpoint": _checkpoint_digest(params),
        "format": params["fmt"],
        "options": params["options"],
    }


def _export_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    content = _export_content(params)
    if store := open_ref(params.get("store")):
        prefix = _export_target(params["run_prefix"], params["fmt"], params.get("publish_prefix"))
        return store_cache_key(ctx, store, prefix, content, ExportRecord)
    content["out"] = str(params["out"])
    return for_record(cache_key(params["out"], content), ExportRecord)


@task(
    name="export",
    task_run_name="export-{fmt}",
    cache_key_fn=_export_key,
    retries=1,
    retry_condition_fn=retry_unless_user_error,
    **PERSIST,
)
def export_task(
    checkpoint: str,
    fmt: str,
    out: str,
    options: dict[str, Any],
    checkpoint_sha256: str | None = None,
    store: StoreRef | None = None,
    run_prefix: str | None = None,
    publish_prefix: str | None = None,
) -> dict[str, Any]:
    """Export *checkpoint* as *fmt* to *out* (verified by the export stage); return its record.

    *options* holds ``num_classes``, ``image_size`` and ``residual_bias``. With a *store*, the
    files are published under *publish_prefix* (default: ``exports/<run-id>/<format>``).
    """
    from irv2_core.export.exporter import export_model

    logger = get_run_logger()
    target = Path(out)
    st = open_ref(store)
    if st is not None:
        params = {"checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256,
                  "fmt": fmt, "options": options}  # fmt: skip
        digest = sha256_json(_export_content(params))
        prefix = _export_target(run_prefix, fmt, publish_prefix)
        if (found := committed_record(st, prefix, digest)) is not None:
            return ExportRecord.model_validate({**found, "checkpoint": checkpoint}).to_json()
        _ensure_checkpoint(st, run_prefix, checkpoint)
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
    files = [Path(record.path)] + ([Path(record.contract_path)] if record.contract_path else [])
    write_stamp(target, current_cache_key(), files)
    if st is not None:  # the model file and its input contract beside it
        publish(st, prefix, {f.name: f for f in files}, digest, record=record.to_json())
    return record.to_json()


def export_options(num_classes: int, config: dict[str, Any]) -> dict[str, Any]:
    """export_model keyword options for a run of *num_classes* classes with *config*."""
    return {
        "num_classes": num_classes,
        "image_size": config["image_size"],
        "residual_bias": config.get("residual_bias", True),
    }
