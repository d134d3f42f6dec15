"""Prefect tasks for ``evaluate`` and ``export``, keyed on the checkpoint's sha256 plus options.

Both run in the flow's process (they compile one graph each), declare their output once
(``declare_evaluate``, ``declare_export``) and return their stage record (``EvalRecord``,
``ExportRecord``) as a JSON dict; with a store the record carries where it was published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from irv2_core.data.local_copy import ensure_conversion
from irv2_core.records import EvalRecord, ExportRecord
from irv2_core.storage.layout import eval_prefix, export_prefix
from irv2_core.storage.outputs import Made, StageOutput, produce_once
from irv2_core.storage.publish import StoreRef, ensure_local, open_ref
from irv2_core.storage.stamps import file_digest
from tasks.caching import StagePolicy, current_cache_key
from tasks.common import PERSIST, retry_unless_user_error

__all__ = ["declare_evaluate", "declare_export", "evaluate_task", "export_options", "export_task"]

_EVAL_KEYS = ("eval_protocol", "image_size", "eval_batch_size", "num_classes", "device_target")


def _checkpoint_digest(params: dict[str, Any]) -> str:
    return params.get("checkpoint_sha256") or file_digest(params["checkpoint"])


def declare_evaluate(params: dict[str, Any]) -> StageOutput:
    """eval.json: keyed on the checkpoint, the MindRecord data and the evaluation options;
    published under the rerun's own prefix when given, else the run's ``eval/``."""
    config = params["config"]
    content = {
        "task": "evaluate",
        "checkpoint": _checkpoint_digest(params),
        "mindrecord_fingerprint": params["mindrecord_fingerprint"],
        "options": {k: config.get(k) for k in _EVAL_KEYS},
        "split": params.get("split", "val"),
    }
    prefix = params.get("publish_prefix")
    if prefix is None and params.get("run_prefix"):
        prefix = eval_prefix(Path(params["run_prefix"]).name)
    return StageOutput("evaluate", content, Path(params["out"]), prefix, EvalRecord)


@task(
    name="evaluate",
    cache_policy=StagePolicy(declare=declare_evaluate),
    retries=1,
    retry_condition_fn=retry_unless_user_error,
    **PERSIST,
)
def evaluate_task(
    checkpoint: str,
    data_dir: str,
    mindrecord_fingerprint: str,
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
    params = {"checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256, "out": out,
              "mindrecord_fingerprint": mindrecord_fingerprint, "config": config, "split": split,
              "run_prefix": run_prefix, "publish_prefix": publish_prefix}  # fmt: skip

    def fetch_inputs() -> None:
        _ensure_checkpoint(st, run_prefix, checkpoint)
        ensure_conversion(st, data_prefix, Path(data_dir), mindrecord_fingerprint)

    def produce() -> Made[EvalRecord]:
        result = evaluate(checkpoint, data_dir, cfg=Config(**config), split=split, out=out)
        logger.info(
            "%s: top-1 %.4f, top-5 %.4f on %s images (%s protocol)",
            split,
            result.top1,
            result.top5,
            result.count,
            result.protocol,
        )
        return Made(result, {"eval.json": Path(out)})

    def adopt(found: EvalRecord) -> EvalRecord:
        return found.model_copy(update={"checkpoint": checkpoint})

    record = produce_once(declare_evaluate(params), st, current_cache_key(), produce,
                          fetch_inputs=fetch_inputs, adopt=adopt)  # fmt: skip
    return record.to_json()


def _ensure_checkpoint(store: Any, run_prefix: str | None, checkpoint: str) -> None:
    """The run's final.ckpt on this worker (fetched and verified when it is not here)."""
    path = Path(checkpoint)
    if not path.is_file() and run_prefix is not None:
        ensure_local(store, run_prefix, path.parent, only=[path.name])


def declare_export(params: dict[str, Any]) -> StageOutput:
    """One exported model file: keyed on the checkpoint, the format and the options; published
    under the rerun's own prefix when given, else ``exports/<run-id>/<format>``."""
    content = {
        "task": "export",
        "checkpoint": _checkpoint_digest(params),
        "format": params["fmt"],
        "options": params["options"],
    }
    prefix = params.get("publish_prefix")
    if prefix is None and params.get("run_prefix"):
        prefix = export_prefix(Path(params["run_prefix"]).name, params["fmt"])
    return StageOutput("export", content, Path(params["out"]), prefix, ExportRecord)


@task(
    name="export",
    task_run_name="export-{fmt}",
    cache_policy=StagePolicy(declare=declare_export),
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
    model file and its input contract are published under *publish_prefix* (default:
    ``exports/<run-id>/<format>``).
    """
    from irv2_core.export.exporter import export_model

    logger = get_run_logger()
    st = open_ref(store)
    params = {"checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256, "fmt": fmt,
              "options": options, "out": out, "run_prefix": run_prefix,
              "publish_prefix": publish_prefix}  # fmt: skip

    def produce() -> Made[ExportRecord]:
        record = export_model(checkpoint, fmt, out, **options)
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
        return Made(record, {f.name: f for f in files})

    def adopt(found: ExportRecord) -> ExportRecord:
        return found.model_copy(update={"checkpoint": checkpoint})

    record = produce_once(declare_export(params), st, current_cache_key(), produce,
                          fetch_inputs=lambda: _ensure_checkpoint(st, run_prefix, checkpoint),
                          adopt=adopt)  # fmt: skip
    return record.to_json()


def export_options(num_classes: int, config: dict[str, Any]) -> dict[str, Any]:
    """export_model keyword options for a run of *num_classes* classes with *config*."""
    return {
        "num_classes": num_classes,
        "image_size": config["image_size"],
        "residual_bias": config.get("residual_bias", True),
    }
